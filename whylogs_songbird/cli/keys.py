"""``songbird keys create|list|revoke``: the API keys a server keeps in its store (data dir or
database), for whylogs pipelines writing with ``WHYLABS_API_KEY`` (see docs/moving-off-whylabs.md)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from whylogs_songbird.cli.reporting import Verbose, command_group, reported, stderr
from whylogs_songbird.errors import SongbirdError

if TYPE_CHECKING:
    from whylogs_songbird.server.store import Store

keys_app = command_group("keys", "API keys of a songbird server's organizations: create, list and revoke.")

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", metavar="DIR", help="The server's data dir (as given to songbird serve)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        help="The server's metadata database (postgresql://…), when it is not SQLite in the data dir.",
        show_default=False,
    ),
]


def _store(data_dir: Path, database_url: str | None) -> Store:
    from whylogs_songbird.server.config import ServerConfig
    from whylogs_songbird.server.store import Store

    if database_url is None and not data_dir.is_dir():
        raise SongbirdError(f"{data_dir} is not a data dir; give the server's --data-dir (or its --database-url).")
    return Store.open(ServerConfig(data_dir=data_dir, database_url=database_url))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option("--org", metavar="ORG-ID", help="The organization the key writes to.")],
    data_dir: DataDir = Path("songbird-data"),
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Make a key of an organization and print it (once: the server keeps only a hash of its secret)."""
    with reported(verbose):
        from whylogs_songbird.server.api_keys import create_key

        store = _store(data_dir, database_url)
        try:
            try:
                made = create_key(store, org)
            except ValueError as exc:
                raise SongbirdError(str(exc)) from None
        finally:
            store.close()
        typer.echo(made.key)
        stderr().print(
            f"key {made.key_id} of {made.org_id}: set it as WHYLABS_API_KEY; it is not shown again "
            "(a running server accepts it at once)"
        )


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = Path("songbird-data"), database_url: DatabaseUrl = None, verbose: Verbose = False
) -> None:
    """List the keys made with songbird keys create: id, organization, made, revoked (never a secret)."""
    with reported(verbose):
        store = _store(data_dir, database_url)
        try:
            rows = store.list_api_keys()
        finally:
            store.close()
        for row in rows:
            typer.echo(
                f"{row['key_id']}  {row['org_id']}  made {_when(row['created_at'])}  revoked {_when(row['revoked_at'])}"
            )
        if not rows:
            stderr().print("no keys yet; make one with songbird keys create --org ORG-ID")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY-ID", help="The key's id: its first 10 characters.")],
    data_dir: DataDir = Path("songbird-data"),
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Refuse a key from now on (a running server refuses it at its next request)."""
    with reported(verbose):
        store = _store(data_dir, database_url)
        try:
            revoked = store.revoke_api_key(key_id[:10])
        finally:
            store.close()
        if not revoked:
            raise SongbirdError(f"no key {key_id[:10]!r} to revoke: see songbird keys list")
        stderr().print(f"key {key_id[:10]} revoked")
