"""``songbird outbox ...``: list, deliver or drop the profiles waiting in the outbox."""

from __future__ import annotations

import textwrap
import time
from typing import Annotated

import typer

from whylogs_songbird.cli.reporting import (
    ConfigDir,
    MaxRetries,
    Timeout,
    UsageProblem,
    Verbose,
    command_group,
    one_line,
    profiles,
    reported,
    status,
    stderr,
)
from whylogs_songbird.client import validate_endpoint
from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import SongbirdError
from whylogs_songbird.outbox import Outbox
from whylogs_songbird.publish import flush_outbox

outbox_app = command_group(
    "outbox",
    "Profiles whose upload failed on an unreachable or failing server wait in the outbox: list, deliver or drop them.",
)


From = Annotated[
    str | None,
    typer.Option("--from", metavar="URL", help="Only the profiles saved for this endpoint.", show_default=False),
]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@outbox_app.command("list")
def outbox_list(
    only_for: From = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """List the waiting profiles: id, kind, profile, endpoint, age and last error (no network call)."""
    with reported(verbose):
        settings = resolve_settings({"config_dir": config_dir})
        wanted = validate_endpoint(only_for) if only_for is not None else None
        outbox = Outbox(settings.outbox_path)
        entries = outbox.entries(wanted)
        now = time.time()
        for entry in entries:
            error = textwrap.shorten(one_line(entry.error), width=160, placeholder=" …") or "-"
            where = entry.endpoint
            if entry.dataset_id:
                where += f" dataset {entry.org_id}/{entry.dataset_id}"
            typer.echo(
                f"{entry.id}  {entry.kind:<9} {entry.label:<28} {where}  age {_age(now - entry.created_at)}"
                f"  tries {entry.attempts}  last error: {error}"
            )
        stderr().print(f"{profiles(len(entries))} waiting in {outbox.directory}")


@outbox_app.command("flush")
def outbox_flush(
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            metavar="URL",
            help="Deliver to this endpoint instead of the one each profile was saved for "
            "(for an endpoint that no longer exists).",
            show_default=False,
        ),
    ] = None,
    only_for: From = None,
    config_dir: ConfigDir = None,
    timeout: Timeout = None,
    max_retries: MaxRetries = None,
    verbose: Verbose = False,
) -> None:
    """Deliver the waiting profiles, each to the endpoint it was saved for (or --endpoint); safe to rerun."""
    with reported(verbose):
        settings = resolve_settings({"config_dir": config_dir, "timeout": timeout, "max_retries": max_retries})
        target = validate_endpoint(endpoint) if endpoint is not None else None
        wanted = validate_endpoint(only_for) if only_for is not None else None
        outbox = Outbox(settings.outbox_path)
        chosen = len(outbox.entries(wanted))
        others = len(outbox.entries()) - chosen if wanted is not None else 0
        elsewhere = (
            f"; {profiles(others)} saved for other endpoints still wait (`songbird outbox list` shows them)"
            if others
            else ""
        )
        with status(stderr(), f"Delivering {profiles(chosen)}"):
            report = flush_outbox(outbox, settings, only_for=wanted, retarget=target)
        for entry in report.delivered:
            typer.echo(f"{entry.kind:<9} {entry.label:<32} {entry.observatory_url or '(no link)'}")
        if report.failed:
            first, reason = report.failed[0]
            raise SongbirdError(
                f"{len(report.failed)} profile(s) are still waiting in the outbox ({first.label}: {reason}); "
                "run `songbird outbox flush` again later, or `songbird outbox flush --endpoint URL` to send them "
                f"elsewhere{elsewhere}."
            )
        none_for = f" (none was saved for {wanted})" if wanted is not None and not chosen else ""
        stderr().print(f"delivered {profiles(len(report.delivered))}{none_for}{elsewhere}")


@outbox_app.command("drop")
def outbox_drop(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID...", help="Ids of the entries to delete (see `songbird outbox list`).", show_default=False
        ),
    ] = None,
    drop_all: Annotated[bool, typer.Option("--all", help="Delete every waiting profile.", show_default=False)] = False,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Delete waiting profiles without delivering them (no network call)."""
    with reported(verbose):
        if bool(ids) == drop_all:
            raise UsageProblem("outbox drop needs entry ids (see `songbird outbox list`) or --all, not both.")
        settings = resolve_settings({"config_dir": config_dir})
        outbox = Outbox(settings.outbox_path)
        dropped = outbox.drop(None if drop_all else ids)
        for entry in dropped:
            typer.echo(f"dropped {entry.id}  {entry.kind:<9} {entry.label}")
        stderr().print(f"dropped {profiles(len(dropped))} from {outbox.directory}")
