"""``songbird check``: evaluate a monitors file on a session's timeline, for CI (see ``whylogs_songbird.check``).

Exit codes: 0 when no monitor fails, 1 when one does, 2 on bad input (an invalid monitors file, an
unknown column, reference, segment or session, or a server that cannot be reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from whylogs_songbird.cli.reporting import Endpoint, app, stderr
from whylogs_songbird.errors import SongbirdError


@app.command("check")
def check_command(
    monitors: Annotated[
        Path, typer.Option("--monitors", metavar="FILE", help="The monitors TOML file (see docs/timeline.md).")
    ],
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            metavar="ID|URL",
            help="The session whose timeline to check: its id or a link to its page. Default: the stored session.",
            show_default=False,
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            metavar="ORG/DATASET",
            help="Check an organization's dataset (written with the WhyLabs log API) instead of a session; "
            "needs --api-key.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="A key of the dataset's organization. Default: SONGBIRD_API_KEY, then WHYLABS_API_KEY.",
            show_default=False,
        ),
    ] = None,
    endpoint: Endpoint = None,
    all_buckets: Annotated[
        bool, typer.Option("--all", help="Check every bucket of the timeline, not only the latest.")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", metavar="SECONDS", help="Read timeout.")] = None,
    start: Annotated[
        str | None,
        typer.Option("--start", metavar="TIME", help="Only buckets from this time on (epoch ms or ISO 8601, UTC)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", metavar="TIME", help="Only buckets before this time (epoch ms or ISO 8601, UTC)."),
    ] = None,
) -> int:
    """Evaluate monitors on a session's (or a dataset's) timeline: exit 1 when one fails, 0 when none
    does, 2 on bad input."""
    from whylogs_songbird.check import (
        BAD_INPUT,
        DatasetTarget,
        render_result,
        resolve_dataset,
        resolve_target,
        run_check,
    )

    target: str | DatasetTarget
    try:
        if dataset is not None and session is not None:
            raise SongbirdError("give --session or --dataset, not both.")
        if dataset is not None:
            target = resolve_dataset(dataset, api_key)
        else:
            target, endpoint = resolve_target(session, endpoint)
    except SongbirdError as exc:
        stderr().print(f"error: {exc}", style="red")
        raise typer.Exit(BAD_INPUT) from None
    result = run_check(
        target,
        monitors,
        endpoint=endpoint,
        which="all" if all_buckets else "latest",
        timeout=timeout,
        start=start,
        end=end,
    )
    console = stderr() if result.error is not None else Console(highlight=False, soft_wrap=False, width=160)
    console.print(render_result(result, target.name if isinstance(target, DatasetTarget) else target))
    if result.exit_code:
        raise typer.Exit(result.exit_code)
    return result.exit_code
