"""``songbird alerts list|retry``: the notifications a server queued for its ``[[notify]]`` targets,
read from its store (the data dir, or ``--database-url``), so it works while the server runs or not."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from whylogs_songbird.cli.reporting import UsageProblem, Verbose, command_group, reported
from whylogs_songbird.errors import SongbirdError

alerts_app = command_group(
    "alerts",
    "Notifications of failed monitors a server sends to its [[notify]] targets: list and retry them.",
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", metavar="DIR",
        help="The server's data dir (as given to songbird serve). Default: <user data dir>/whylogs-songbird/server.",
        show_default=False,
    ),
]  # fmt: skip
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", metavar="URL",
        help="The server's metadata database, when it is not SQLite in the data dir (postgresql://...).",
        show_default=False,
    ),
]  # fmt: skip


@contextlib.contextmanager
def _queue(data_dir: Path | None, database_url: str | None) -> Iterator[Any]:
    """The notification queue of the server's store (opened without a blob store)."""
    from whylogs_songbird.server.cli import default_data_dir
    from whylogs_songbird.server.notify import queue_of
    from whylogs_songbird.server.storage import DB_FILE, StorageConfigError, StorageSpec, open_metadata

    directory = (data_dir or default_data_dir()).expanduser()
    if database_url is None and not (directory / DB_FILE).exists():
        raise UsageProblem(f"no server data in {directory}: give the --data-dir (or --database-url) the server uses.")
    try:
        metadata = open_metadata(StorageSpec(data_dir=directory, database_url=database_url))
    except StorageConfigError as exc:
        raise UsageProblem(str(exc)) from None
    except RuntimeError as exc:  # PostgreSQL unreachable (the message never shows a password)
        raise SongbirdError(str(exc)) from None
    try:
        yield queue_of(metadata)
    finally:
        metadata.close()


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _target_name(metadata: Any, session_id: str) -> str:
    """What a notification is about: the session id, or ``ORG/DATASET`` for an organization's dataset."""
    row = metadata.get_session(session_id)
    return f"{row.org_id}/{row.dataset_id}" if row is not None and row.dataset_id is not None else session_id


@alerts_app.command("list")
def alerts_list(
    state: Annotated[
        str | None,
        typer.Option("--state", metavar="STATE", help="Only sent, pending or failed ones.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", min=1, help="Show at most N, newest first.")] = 50,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """List queued notifications: state, target, event, column, bucket, attempts and the last error."""
    with reported(verbose):
        if state is not None and state not in ("sent", "pending", "failed"):
            raise UsageProblem(f"--state takes sent, pending or failed, not {state!r}.")
        with _queue(data_dir, database_url) as queue:
            counts = queue.notification_counts()
            records = queue.list_notifications(state, limit=limit)
            names = {r.session_id: _target_name(queue, r.session_id) for r in records}
        typer.echo(f"{counts['sent']} sent, {counts['pending']} pending, {counts['failed']} failed")
        for r in records:
            line = (
                f"{r.id[:12]}  {r.state:<7}  {r.event:<8}  {r.target}  {names[r.session_id]}  {r.monitor} / {r.column}"
                f"{'  [' + r.segment + ']' if r.segment else ''}  bucket {_when(r.bucket_start)}  "
                f"attempts {r.attempts}"
            )
            if r.state == "sent":
                line += f"  sent {_when(r.sent_at)}"
            elif r.state == "pending":
                line += f"  next {_when(r.next_at)}"
            if r.last_error and r.state != "sent":
                line += f"  last error: {r.last_error}"
            typer.echo(line)


@alerts_app.command("retry")
def alerts_retry(
    ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="Ids (or id prefixes, as listed) to retry. Default: every failed one."),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Send failed (and pending) notifications again, now, with a fresh retry period. Sent ones never
    go twice. A running server with [[notify]] tables sends them within 30 s."""
    with reported(verbose):
        with _queue(data_dir, database_url) as queue:
            chosen: list[str] = []
            if ids:
                known = [r.id for r in queue.list_notifications(limit=100_000) if r.state != "sent"]
                for given in ids:
                    matches = [k for k in known if k.startswith(given)]
                    if len(matches) != 1:
                        problem = "matches no failed or pending notification" if not matches else "is ambiguous"
                        raise UsageProblem(f"{given!r} {problem}; see songbird alerts list.")
                    chosen.append(matches[0])
            changed = queue.retry_notifications(chosen)
        typer.echo(
            f"{changed} notification(s) due now; a running server with [[notify]] tables sends them within 30 s."
        )
