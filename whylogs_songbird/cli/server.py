"""``songbird serve`` (the local server in the foreground) and ``songbird server status|stop`` (the
background server the embedded default starts when no endpoint is set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from whylogs_songbird.cli.reporting import (
    ConfigDir,
    Verbose,
    app,
    command_group,
    reported,
    stderr,
)
from whylogs_songbird.config import Settings, resolve_settings
from whylogs_songbird.errors import SongbirdError
from whylogs_songbird.models import HEALTH_TOKEN_FILE
from whylogs_songbird.server.cli import serve_command
from whylogs_songbird.server.cli import shared_address as server_shared_address

server_app = command_group(
    "server",
    "The local songbird server started in the background when no endpoint is set: status and stop.",
)

LocalPort = Annotated[
    int | None,
    typer.Option(
        "--port",
        "-p",
        metavar="PORT",
        min=1,
        max=65535,
        help="Port of the background server. Default: $SONGBIRD_LOCAL_PORT, then 8737.",
        show_default=False,
    ),
]
LocalDataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="Its data dir. Default: $SONGBIRD_LOCAL_DATA_DIR, then <user data dir>/whylogs-songbird/server.",
        show_default=False,
    ),
]


def _local_settings(port: int | None, data_dir: Path | None, config_dir: Path | None) -> Settings:
    """The settings of the local server as ``status`` and ``stop`` read them (options over the environment)."""
    return resolve_settings({"local_port": port, "local_data_dir": data_dir, "config_dir": config_dir})


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


@server_app.command("status")
def server_status(
    port: LocalPort = None,
    data_dir: LocalDataDir = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Show the local server: address, pid, data dir, uptime and number of sessions (exit 1 if none runs)."""
    with reported(verbose):
        from whylogs_songbird.background_server import NotSongbird, local_url, probe

        settings = _local_settings(port, data_dir, config_dir)
        try:
            found = probe(settings.local_port, data_dir=settings.server_data_dir)
        except NotSongbird as exc:
            raise SongbirdError(
                f"{exc}: another program listens there. Set another port for the local server (SONGBIRD_LOCAL_PORT)."
            ) from None
        if found is None:
            typer.echo(f"address:  {local_url(settings.local_port)} (not running)")
            typer.echo(f"data dir: {settings.server_data_dir}")
            stderr().print("no local songbird server runs; the next publish without an endpoint starts one")
            raise typer.Exit(1)
        uptime = found.uptime_seconds
        typer.echo(f"address:  {found.url}")
        typer.echo(f"pid:      {found.pid if found.pid is not None else '?'}")
        typer.echo(f"data dir: {found.data_dir or '?'}")
        typer.echo(f"uptime:   {_uptime(uptime) if uptime is not None else '?'}")
        typer.echo(f"sessions: {found.sessions if found.sessions is not None else '?'}")
        if found.stored_bytes is not None:
            typer.echo(f"stored:   {found.stored_profiles} profiles, {found.stored_bytes / 1e6:.1f} MB")
        if found.version:
            typer.echo(f"version:  {found.version}")
        if found.pid is None:
            stderr().print(
                "the server tells its details only to requests with the token in "
                f"{settings.server_data_dir / HEALTH_TOKEN_FILE}: run this as the user who started it, "
                "with its --data-dir"
            )


@server_app.command("stop")
def server_stop(
    port: LocalPort = None,
    data_dir: LocalDataDir = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Stop the background server this package started (exit 0 when none runs)."""
    with reported(verbose):
        from whylogs_songbird.background_server import stop_server

        settings = _local_settings(port, data_dir, config_dir)
        report = stop_server(settings)
        stderr().print(report.message)


# -- songbird serve ---------------------------------------------------------------------------

# The one definition of the server's command line lives with the server; `songbird serve` and
# `python -m whylogs_songbird.server` run the same function with the same options.
app.command("serve")(serve_command)


def shared_address(host: str) -> str:
    """An address of this machine that others can use to reach ``host`` (the host name for 0.0.0.0 / ::)."""
    return server_shared_address(host)
