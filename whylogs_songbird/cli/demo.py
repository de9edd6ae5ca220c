"""``songbird demo``: publish a made-up dataset with drift and print links that keep working.

Without ``--endpoint`` the demo publishes to the embedded default, the local songbird server
that runs in the background (started if need be), so every printed link still opens after the
command exits; the output ends with how to stop that server. The demo publishes into a fresh
guest session of its own, so the session your own publishes use is left alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID

from whylogs_songbird.cli.reporting import (
    ConfigDir,
    Endpoint,
    MaxRetries,
    Timeout,
    UsageProblem,
    Verbose,
    app,
    connection_options,
    progress_bars,
    reported,
    songbird_command,
    stderr,
)
from whylogs_songbird.client import HOSTED_ENDPOINT
from whylogs_songbird.config import DEFAULT_LOCAL_PORT, resolve_settings
from whylogs_songbird.connect import make_client
from whylogs_songbird.publish import Publisher
from whylogs_songbird.session import SessionStore

if TYPE_CHECKING:
    from whylogs_songbird.demo import DemoReport


def _print_demo(report: DemoReport, session_page: str | None = None) -> None:
    data = report.data
    worst = data.most_drifted
    if session_page:
        typer.echo("Timeline: drift of every column, day by day, against the reference (click a cell to compare):")
        typer.echo(f"  {session_page}/timeline")
        typer.echo("")
    typer.echo(f"Observatory links (session {report.session_id}):")
    typer.echo("")
    typer.echo(f"  reference {data.reference_name!r} ({len(data.reference):,} rows)")
    typer.echo(f"    {report.reference.observatory_url}")
    typer.echo("")
    typer.echo("  daily batches (drift score vs the reference: the largest KS / total-variation distance of a column)")
    for batch in data.batches:
        link = batch.published.observatory_url if batch.published else None
        mark = "  <- most drifted" if batch is worst else ""
        typer.echo(f"    {batch.day:%Y-%m-%d}  drift {batch.score:.2f} ({batch.most_drifted_column}){mark}")
        typer.echo(f"      {link}")
    typer.echo("")
    typer.echo(f"  compare {data.reference_name!r} with the most drifted batch ({worst.day:%Y-%m-%d}):")
    typer.echo(f"    {report.comparison_url}")
    if session_page:
        typer.echo("")
        typer.echo("  every profile of the session (a page of the local observatory):")
        typer.echo(f"    {session_page}")


@app.command("demo")
def demo_command(
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="Accepted for older scripts: the demo always exits after printing the links, which keep working.",
        ),
    ] = False,
    days: Annotated[int, typer.Option("--days", min=2, max=90, help="How many daily batches to publish.")] = 7,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Data dir of the local server, if the demo starts it. "
            "Default: $SONGBIRD_LOCAL_DATA_DIR, then <user data dir>/whylogs-songbird/server.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            min=1,
            max=65535,
            help="Port of the local server. Default: $SONGBIRD_LOCAL_PORT, then 8737.",
            show_default=False,
        ),
    ] = None,
    endpoint: Endpoint = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Publish a made-up 'loan applications' dataset (a reference and daily batches with drift) and print links.

    Without --endpoint, it goes to the local songbird server running in the background (started
    if need be), so the links keep working after the demo exits: `songbird server stop` stops it.
    """
    with reported(verbose):
        from whylogs_songbird import demo

        options = connection_options(endpoint, config_dir, timeout, max_retries)
        if endpoint is not None and (data_dir is not None or port is not None):
            raise UsageProblem("--data-dir and --port are for the local server: leave them out with --endpoint.")
        if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
            raise UsageProblem(f"--data-dir {data_dir} is not a directory.")
        options.update(local_port=port, local_data_dir=data_dir, outbox=False)
        # The demo's data is made again by running it again: nothing to keep in an outbox.
        base = resolve_settings(options)
        console = stderr()
        started = time.monotonic()
        # A fresh guest session of its own: the session your own publishes use is left alone.
        with make_client(base) as client:
            session_id = client.create_session(SessionStore.for_directory(base.config_dir).user_id()).id
        settings = resolve_settings({**options, "session_id": session_id})
        with progress_bars(console) as progress:
            task = progress.add_task("Generating loan applications", total=1)
            data = demo.make_demo_data(days)
            progress.advance(task)
            tasks: dict[str, TaskID] = {}

            def step(name: str, done: int, total: int) -> None:
                label = {"profile": "Profiling", "link": "Linking"}.get(name, name)
                if name not in tasks:
                    tasks[name] = progress.add_task(label, total=total)
                progress.update(tasks[name], completed=done, total=total)

            items = demo.profile_demo(data, step)
            upload = progress.add_task("Uploading", total=len(items))
            with Publisher(settings, on_profile=lambda _: progress.advance(upload)) as publisher:
                report = demo.publish_demo(data, items, publisher=publisher, progress=step)
        console.print(
            f"published 1 reference and {len(data.batches)} daily batches to {settings.endpoint} "
            f"in {time.monotonic() - started:.1f}s"
        )
        page = f"{settings.endpoint}/sessions/{report.session_id}" if settings.endpoint != HOSTED_ENDPOINT else None
        _print_demo(report, page)
        if base.embedded:
            typer.echo("")
            typer.echo(
                "The local songbird server keeps running, so these links keep working "
                f"(data in {base.server_data_dir})."
            )
            port_flag = f" --port {base.local_port}" if base.local_port != DEFAULT_LOCAL_PORT else ""
            typer.echo(f"Stop it with: {songbird_command()} server stop{port_flag}")
