"""``songbird profile`` and ``songbird upload``: publish data files and serialized profiles.

Every input is checked before the first network call, so a command that fails on its input has
neither created a session nor uploaded anything. Reading data files goes through
`whylogs_songbird.tables`, the library module notebooks use too.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from whylogs_songbird.profiles import ProfileItem, check_alias, items_from, read_profile_file, segment_warning_silenced
from whylogs_songbird.publish import comparison_links
from whylogs_songbird.tables import (
    check_readable_file,
    detect_format,
    parse_timestamp,
    read_table,
    segment_schema,
)

if TYPE_CHECKING:
    from rich.console import Console
    from whylogs.api.logger.result_set import ResultSet

# -- songbird profile -------------------------------------------------------------------------


@app.command("profile")
def profile_command(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help="A CSV, TSV, Parquet or JSON-lines file; with --engine, also a parquet directory or a CSV glob "
            "(quoted: 'logs/*.csv').",
            show_default=False,
        ),
    ],
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", metavar="NAME", help="Publish as a reference profile with this name."),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            "-e",
            metavar="ENGINE",
            help="pandas, dask or spark: profile a parquet file, a parquet directory or a CSV glob with this "
            "engine (pandas streams it in batches; dask and spark need their extras). Default: a single file is "
            "read whole; a directory or a glob is streamed with pandas.",
            show_default=False,
        ),
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
        console = stderr()
        if engine is not None or data.is_dir() or glob.has_magic(str(data)):
            if file_format is not None:
                raise UsageProblem("--format is for a single file: with --engine, the files' extensions say it.")
            results, what = _profile_with_engine(data, engine or "pandas", segment_by, stamp, console)
            items = items_from(results, dataset_timestamp=stamp, reference_profile_name=name)
        else:
            fmt = detect_format(data, file_format)
            with status(console, f"Reading {data}"):
                frame = read_table(data, fmt)
                schema = segment_schema(frame, segment_by) if segment_by else None
            with status(console, f"Profiling {len(frame)} rows"):
                import whylogs as why

                with segment_warning_silenced():
                    results = why.log(frame, schema=schema) if schema is not None else why.log(frame)
                items = items_from(results, dataset_timestamp=stamp, reference_profile_name=name)
            what = f" ({len(frame)} rows, {len(frame.columns)} columns of {data.name})"
        with progress_bars(console) as progress:
            result = publish_with_progress(settings, items, progress)
        finish(result, what)
        if compare_with is not None:
            options = connection_options(endpoint, config_dir, timeout, max_retries)
            for url in comparison_links(result, compare_with, **options):
                typer.echo(f"{'compare':<9} {'with ' + compare_with:<32} {url}")


def _profile_with_engine(
    data: Path, engine: str, segment_by: list[str] | None, stamp: int | None, console: Console
) -> tuple[ResultSet, str]:
    """Profile a parquet file or directory, or a CSV glob, with ``engine``, showing its progress.

    Returns the result set and the summary's note.
    """
    from whylogs.api.logger.result_set import SegmentedResultSet

    from whylogs_songbird.engines import ENGINES, profile_path

    if engine not in ENGINES:
        raise UsageProblem(f"--engine {engine!r} is not one of {', '.join(ENGINES)}.")
    with progress_bars(console) as progress:
        task = progress.add_task(f"Profiling with {engine}", total=None)

        def step(done: int, total: int | None, unit: str) -> None:
            progress.update(task, completed=done, total=total, description=f"Profiling {unit} with {engine}")

        results = profile_path(
            data, engine=engine, segment_by=segment_by or None, dataset_timestamp=stamp, progress=step
        )
    views = (results.get_writables() or []) if isinstance(results, SegmentedResultSet) else [results.view()]
    rows = sum(_rows(v) for v in views)
    return results, f" ({rows:,} rows of {data}, profiled with {engine})"


def _rows(view: Any) -> int:
    inner = getattr(view, "profile_view", view)
    columns = inner.get_columns()
    if not columns:
        return 0
    counts = next(iter(columns.values())).get_metric("counts")
    return int(counts.n.value) if counts is not None else 0


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
