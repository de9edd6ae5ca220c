"""``songbird profile`` and ``songbird upload``: publish data files and serialized profiles.

Every input is checked before the first network call, so a command that fails on its input has
neither created a session nor uploaded anything. Reading data files goes through
`whylogs_songbird.tables`, the library module notebooks use too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whylogs_songbird.cli.reporting import (
    ConfigDir,
    Endpoint,
    MaxRetries,
    Timeout,
    UsageProblem,
    Verbose,
    app,
    connection_options,
    finish,
    progress_bars,
    publish_with_progress,
    reported,
    status,
    stderr,
)
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.profiles import ProfileItem, check_alias, items_from, read_profile_file
from whylogs_songbird.publish import comparison_links
from whylogs_songbird.tables import (
    check_readable_file,
    detect_format,
    parse_timestamp,
    read_table,
    segment_schema,
)

# -- songbird profile -------------------------------------------------------------------------


@app.command("profile")
def profile_command(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="A CSV, TSV, Parquet or JSON-lines file.", show_default=False)
    ],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", metavar="NAME", help="Publish as a reference profile with this name."),
    ] = None,
    segment_by: Annotated[
        list[str] | None,
        typer.Option("--segment-by", "-s", metavar="COLUMN", help="Segment on this column (repeat for several)."),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp",
            "-t",
            metavar="WHEN",
            help="Dataset timestamp: ISO 8601 (UTC unless an offset is given) or epoch milliseconds. Default: now.",
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option("--format", metavar="FORMAT", help="csv, tsv, parquet or jsonl (default: from the extension)."),
    ] = None,
    compare_with: Annotated[
        str | None,
        typer.Option(
            "--compare-with",
            metavar="NAME",
            help="Also print links comparing this batch with the reference NAME published earlier into the session.",
        ),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Profile a data file with whylogs and publish the profile; prints its observatory link(s)."""
    with reported(verbose):
        settings = resolve_settings(connection_options(endpoint, config_dir, timeout, max_retries))
        stamp = parse_timestamp(timestamp) if timestamp is not None else None
        name = check_alias(reference) if reference is not None else None
        if compare_with is not None:
            check_alias(compare_with)
            if reference is not None:
                raise UsageProblem("--compare-with compares a batch with a reference: leave out --reference.")
        fmt = detect_format(data, file_format)
        console = stderr()
        with status(console, f"Reading {data}"):
            frame = read_table(data, fmt)
            schema = segment_schema(frame, segment_by) if segment_by else None
        with status(console, f"Profiling {len(frame)} rows"):
            import whylogs as why

            results = why.log(frame, schema=schema) if schema is not None else why.log(frame)
            items = items_from(results, dataset_timestamp=stamp, reference_profile_name=name)
        with progress_bars(console) as progress:
            result = publish_with_progress(settings, items, progress)
        finish(result, f" ({len(frame)} rows, {len(frame.columns)} columns of {data.name})")
        if compare_with is not None:
            options = connection_options(endpoint, config_dir, timeout, max_retries)
            for url in comparison_links(result, compare_with, **options):
                typer.echo(f"{'compare':<9} {'with ' + compare_with:<32} {url}")


# -- songbird upload --------------------------------------------------------------------------


@app.command("upload")
def upload_command(
    files: Annotated[
        list[Path], typer.Argument(metavar="PROFILE", help="Serialized whylogs profiles (.bin).", show_default=False)
    ],
    reference: Annotated[
        list[str] | None,
        typer.Option(
            "--reference",
            "-r",
            metavar="NAME",
            help="Publish as references: one name per file, in order. Without it, batch profiles.",
        ),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp",
            "-t",
            metavar="WHEN",
            help="Override each profile's dataset timestamp: ISO 8601 or epoch milliseconds.",
        ),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Publish profiles already serialized by whylogs; several references go up in one batch call."""
    with reported(verbose):
        settings = resolve_settings(connection_options(endpoint, config_dir, timeout, max_retries))
        stamp = parse_timestamp(timestamp) if timestamp is not None else None
        names = list(reference or [])
        if names and len(names) != len(files):
            raise UsageProblem(
                f"got {len(files)} profile file(s) but {len(names)} --reference name(s): "
                "give one name per file (in the same order), or none for batch profiles."
            )
        for name in names:
            check_alias(name)
        if len(set(names)) != len(names):
            raise UsageProblem("a --reference name is given twice: reference names must be unique.")
        for path in files:
            check_readable_file(path, "a profile file")
        console = stderr()
        items: list[ProfileItem] = []
        with progress_bars(console) as progress:
            task = progress.add_task("Reading profiles", total=len(files))
            for index, path in enumerate(files):
                view = read_profile_file(path)
                alias = names[index] if names else None
                items.extend(items_from(view, dataset_timestamp=stamp, reference_profile_name=alias))
                progress.advance(task)
        with progress_bars(console) as progress:
            result = publish_with_progress(settings, items, progress)
        finish(result)
