"""``songbird serve`` (the local server in the foreground) and ``songbird server status|stop`` (the
background server the embedded default starts when no endpoint is set)."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from whylogs_songbird.cli.reporting import (
    ConfigDir,
    UsageProblem,
    Verbose,
    app,
    command_group,
    reported,
    stderr,
)
from whylogs_songbird.config import default_server_data_dir, resolve_settings
from whylogs_songbird.errors import SongbirdError

server_app = command_group(
    "server",
    "The local songbird server started in the background when no endpoint is set: status and stop.",
)

LocalPort = Annotated[
    int | None,
    typer.Option(
        "--port", "-p", metavar="PORT", min=1, max=65535,
        help="Port of the background server. Default: $SONGBIRD_LOCAL_PORT, then 8787.", show_default=False,
    ),
]
LocalDataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", metavar="DIR",
        help="Its data dir. Default: $SONGBIRD_LOCAL_DATA_DIR, then <user data dir>/whylogs-songbird/server.",
        show_default=False,
    ),
]


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
        from whylogs_songbird.local_server import NotSongbird, local_url, probe

        settings = resolve_settings({"local_port": port, "local_data_dir": data_dir, "config_dir": config_dir})
        try:
            found = probe(settings.local_port)
        except NotSongbird as exc:
            raise SongbirdError(
                f"{exc}: another program listens there. Set another port for the local server "
                "(SONGBIRD_LOCAL_PORT)."
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
        if found.version:
            typer.echo(f"version:  {found.version}")


@server_app.command("stop")
def server_stop(
    port: LocalPort = None,
    data_dir: LocalDataDir = None,
    config_dir: ConfigDir = None,
    verbose: Verbose = False,
) -> None:
    """Stop the background server this package started (exit 0 when none runs)."""
    with reported(verbose):
        from whylogs_songbird.local_server import stop_server

        settings = resolve_settings({"local_port": port, "local_data_dir": data_dir, "config_dir": config_dir})
        report = stop_server(settings)
        stderr().print(report.message)


# -- songbird serve ---------------------------------------------------------------------------


def shared_address(host: str) -> str:
    """An address of this machine that others can use to reach ``host`` (the host name for 0.0.0.0 / ::)."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - only for display
        return socket.getfqdn() or socket.gethostname() or "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SongbirdError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host."
            ) from None


@app.command("serve")
def serve_command(
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface, for a team)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", metavar="PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8787,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Where sessions and profiles are kept. Default: <user data dir>/whylogs-songbird/server.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="An API key accepted for get_session and claim, '<id>.<secret>[:<org-id>]' (repeatable). "
            "Default: $SONGBIRD_SERVER_API_KEYS.",
        ),
    ] = None,
    url_ttl: Annotated[
        int, typer.Option("--url-ttl", metavar="SECONDS", min=1, help="How long upload URLs stay valid.")
    ] = 900,
    latency_ms: Annotated[
        int,
        typer.Option("--latency-ms", metavar="MS", min=0, help="Delay every API request (emulates a network)."),
    ] = 0,
    fault_rate: Annotated[
        float,
        typer.Option(
            "--fault-rate",
            metavar="RATE",
            min=0.0,
            max=1.0,
            help="Answer this fraction of API requests with 500, 503, 429 or a dropped connection (for testing).",
        ),
    ] = 0.0,
    fault_seed: Annotated[
        int | None, typer.Option("--fault-seed", metavar="N", help="Seed of --fault-rate, for reproducible faults.")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            metavar="URL",
            help="Base URL used in links (upload and observatory URLs), e.g. https://songbird.example.com behind "
            "a reverse proxy. Default: the address each request came to.",
            show_default=False,
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the local songbird-compatible server and observatory in the foreground (Ctrl-C stops it)."""
    with reported(verbose, show_library_log=False):
        try:
            from whylogs_songbird.server import ServerConfig, run_server
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageProblem(
                f"the local server needs the 'server' extra ({exc.name} is missing): "
                "pip install 'whylogs-songbird[server]'."
            ) from None
        directory = (data_dir or default_server_data_dir()).expanduser()
        try:
            config = ServerConfig(
                host=host,
                port=port,
                data_dir=directory,
                api_keys=list(api_key or []),
                url_ttl_seconds=url_ttl,
                latency_ms=latency_ms,
                fault_rate=fault_rate,
                fault_seed=fault_seed,
                public_url=public_url,
            )
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        check_port_free(host, port)
        directory.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        url = public_url or f"http://{shared_address(host)}:{port}"
        console = stderr()
        console.print(f"songbird local server on {url} (data in {directory}); Ctrl-C stops it.")
        console.print(f"Publish to it with: export SONGBIRD_API_ENDPOINT={url}")
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(
                f"warning: listening on {host}: anyone who can reach this address can create sessions and upload."
            )
        with contextlib.suppress(KeyboardInterrupt):
            run_server(config)
        console.print("songbird local server stopped.")

