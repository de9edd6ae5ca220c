"""The one command-line definition of the server: :func:`serve_command`.

``python -m whylogs_songbird.server [OPTIONS]`` runs it as its only command (see :data:`app`); the
``songbird`` command registers the same function as ``songbird serve``. Every server option is
here, once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from whylogs_songbird.help_text import TidyCommand
from whylogs_songbird.server.common import is_loopback_host
from whylogs_songbird.server.config import (
    API_KEYS_ENV,
    DEFAULT_CLAIM_LEASE_SECONDS,
    DEFAULT_MAX_OPEN_SLOTS,
    METRICS_TOKEN_ENV,
    ServerConfig,
    shared_address,
)
from whylogs_songbird.server.connections import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT
from whylogs_songbird.server.durations import parse_duration
from whylogs_songbird.server.ratelimits import (
    DEFAULT_SESSION_BURST,
    DEFAULT_SESSION_RATE,
    DEFAULT_SLOT_BURST,
    DEFAULT_SLOT_RATE,
)

APP_NAME = "whylogs-songbird"
logger = logging.getLogger("whylogs_songbird.server")

_STORAGE = "Storage"
_TESTING = "Testing"
_SECURITY = "Security and limits"


class OnOff(str, Enum):
    """A switch on the command line."""

    on = "on"
    off = "off"


def default_data_dir() -> Path:
    """Where the server keeps its data unless told: ``<user data dir>/whylogs-songbird/server``."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / "server"


def storage_description(config: ServerConfig) -> str:
    """Where the server keeps things, for its start banner (a database password shows as ***)."""
    if config.database_url is None and config.blob_store is None:
        return f"data in {config.data_dir}"
    from whylogs_songbird.server.storage.postgres import redacted

    database = redacted(config.database_url) if config.database_url else f"SQLite in {config.data_dir}"
    blobs = config.blob_store or f"files in {config.data_dir}"
    if config.s3_endpoint_url and blobs.startswith("s3://"):
        blobs += f" at {config.s3_endpoint_url}"
    return f"metadata in {database}, profiles in {blobs}"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            typer.echo(
                f"error: cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port or --host.",
                err=True,
            )
            raise typer.Exit(1) from None


def config_from_options(
    *,
    host: str = "127.0.0.1",
    port: int = 8737,
    data_dir: Path | None = None,
    api_key: list[str] | None = None,
    api_key_file: Path | None = None,
    forwarded_allow_ips: str | None = None,
    url_ttl: int = 900,
    public_url: str | None = None,
    workers: int = 1,
    database_url: str | None = None,
    blob_store: str | None = None,
    s3_endpoint_url: str | None = None,
    max_columns: int = 20_000,
    claim_lease: float = DEFAULT_CLAIM_LEASE_SECONDS,
    latency_ms: int = 0,
    fault_rate: float = 0.0,
    fault_seed: int | None = None,
    monitors: Path | None = None,
    allowed_host: list[str] | None = None,
    list_sessions: bool = False,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_connections: int | None = None,
    max_session_profiles: int | None = None,
    max_session_bytes: int | None = None,
    max_open_slots: int = DEFAULT_MAX_OPEN_SLOTS,
    session_rate: float = DEFAULT_SESSION_RATE,
    session_burst: int = DEFAULT_SESSION_BURST,
    slot_rate: float = DEFAULT_SLOT_RATE,
    slot_burst: int = DEFAULT_SLOT_BURST,
    max_client_connections: int | None = None,
    guest_sessions: str = "on",
    metrics_token: str | None = None,
    metrics_max_series: int = 10_000,
    smtp_url: str | None = None,
    retention: str | None = None,
) -> ServerConfig:
    """The :class:`ServerConfig` of the command-line options (ValueError when one is bad)."""
    return ServerConfig(
        host=host,
        port=port,
        data_dir=(data_dir or default_data_dir()).expanduser(),
        api_keys=list(api_key or []),
        api_key_file=api_key_file,
        forwarded_allow_ips=(forwarded_allow_ips or "").split(","),
        url_ttl_seconds=url_ttl,
        latency_ms=latency_ms,
        public_url=public_url,
        fault_rate=fault_rate,
        fault_seed=fault_seed,
        workers=workers,
        database_url=database_url,
        blob_store=blob_store,
        s3_endpoint_url=s3_endpoint_url,
        max_columns=max_columns,
        claim_lease_seconds=claim_lease,
        monitors=monitors,
        allowed_hosts=list(allowed_host or []),
        list_sessions=list_sessions,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        max_session_profiles=max_session_profiles,
        max_session_bytes=max_session_bytes,
        max_open_slots=max_open_slots,
        session_rate=session_rate,
        session_burst=session_burst,
        slot_rate=slot_rate,
        slot_burst=slot_burst,
        max_client_connections=max_client_connections,
        guest_sessions=OnOff(guest_sessions) is OnOff.on,
        metrics_token=metrics_token,
        metrics_max_series=metrics_max_series,
        smtp_url=smtp_url,
        retention_seconds=parse_duration(retention) if retention is not None else None,
    )


#: The command-line options that make a ServerConfig: the parameters of config_from_options.
_CONFIG_OPTIONS = tuple(inspect.signature(config_from_options).parameters)


def parse_args(argv: list[str]) -> ServerConfig:
    """The :class:`ServerConfig` a command line gives, without serving (click's usage errors raise)."""
    command = typer.main.get_command(app)
    with command.make_context("python -m whylogs_songbird.server", list(argv)) as ctx:
        params = ctx.params
    return config_from_options(**{name: params[name] for name in _CONFIG_OPTIONS})


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            "-p",
            min=0,
            max=65535,
            envvar="SONGBIRD_LOCAL_PORT",
            help="Port to listen on. Default: $SONGBIRD_LOCAL_PORT (the local server's), then 8737.",
            show_default=False,
        ),
    ] = 8737,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Where sessions, profiles and the URL-signing secret are kept. "
            "Default: $SONGBIRD_LOCAL_DATA_DIR, then <user data dir>/whylogs-songbird/server.",
            envvar="SONGBIRD_LOCAL_DATA_DIR",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="An API key accepted for get_session and claim, '<id>.<secret>[:<org-id>]' (repeatable). "
            "Visible to other local users (ps): prefer --api-key-file or "
            f"${API_KEYS_ENV} (comma-separated), which is read when neither option gives a key.",
            rich_help_panel=_SECURITY,
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            metavar="FILE",
            help="Read API keys from FILE, one per line ('#' comments and blank lines skipped); keep it "
            "readable only by you. Adds to --api-key.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            metavar="ADDRS",
            help="Comma-separated addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed ('*': any client). Default: none, the headers are ignored.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    url_ttl: Annotated[
        int, typer.Option("--url-ttl", metavar="SECONDS", min=1, help="How long upload URLs stay valid.")
    ] = 900,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", metavar="URL", help="Base URL used in links (behind a reverse proxy)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", "-w", metavar="N", min=1, help="Server processes sharing the listening socket."),
    ] = 1,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="Metadata database: sqlite:///PATH or postgresql://USER@HOST/DB. Default: SQLite in the data dir.",
            rich_help_panel=_STORAGE,
            show_default=False,
        ),
    ] = None,
    blob_store: Annotated[
        str | None,
        typer.Option(
            "--blob-store",
            metavar="URL",
            help="Where profile bytes go: file:///DIR or s3://BUCKET/PREFIX. Default: files in the data dir.",
            rich_help_panel=_STORAGE,
            show_default=False,
        ),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint-url",
            metavar="URL",
            help="Endpoint of an S3-compatible store (SeaweedFS, MinIO); credentials from the AWS_* variables.",
            rich_help_panel=_STORAGE,
            show_default=False,
        ),
    ] = None,
    max_columns: Annotated[
        int,
        typer.Option("--max-columns", metavar="N", min=1, help="Refuse uploaded profiles with more columns."),
    ] = 20_000,
    claim_lease: Annotated[
        float,
        typer.Option(
            "--claim-lease",
            metavar="SECONDS",
            min=0.3,
            help="How long a host's claim on a profile to summarise holds without its heartbeat: "
            "work of a host that died is taken over after this long.",
            rich_help_panel=_STORAGE,
        ),
    ] = DEFAULT_CLAIM_LEASE_SECONDS,
    latency_ms: Annotated[
        int,
        typer.Option(
            "--latency-ms",
            metavar="MS",
            min=0,
            help="Delay every API request (emulates a network).",
            rich_help_panel=_TESTING,
        ),
    ] = 0,
    fault_rate: Annotated[
        float,
        typer.Option(
            "--fault-rate",
            metavar="RATE",
            min=0.0,
            max=1.0,
            help="Answer this fraction of API requests with 500, 503, 429 or a dropped connection (for testing).",
            rich_help_panel=_TESTING,
        ),
    ] = 0.0,
    fault_seed: Annotated[
        int | None,
        typer.Option(
            "--fault-seed", metavar="N", help="Seed of --fault-rate, for reproducible faults.", rich_help_panel=_TESTING
        ),
    ] = None,
    monitors: Annotated[
        Path | None,
        typer.Option(
            "--monitors",
            metavar="FILE",
            help="A monitors TOML file: evaluated when a batch lands; failures show on the timeline as alerts.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            metavar="NAME",
            help="Also answer requests whose Host header names NAME (repeatable; '*': any). Always answered: the "
            "--host address, localhost, the loopback addresses, the host of --public-url and, bound to 0.0.0.0 "
            "or ::, this machine's names and addresses.",
            rich_help_panel=_SECURITY,
        ),
    ] = None,
    list_sessions: Annotated[
        bool,
        typer.Option(
            "--list-sessions",
            help="List recent sessions on the home page. A session id opens its profiles: only for a server "
            "nobody else reaches; refused with --public-url.",
            rich_help_panel=_SECURITY,
        ),
    ] = False,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            metavar="SECONDS",
            min=0.001,
            help="Close connections that do not send a request line and headers within this time.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_HEADER_TIMEOUT,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            metavar="SECONDS",
            min=0.001,
            help="Close connections that stay silent this long while sending a request body.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_BODY_TIMEOUT,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            metavar="N",
            min=1,
            help="Open connections per server process (each of --workers has its own); more are answered 503. "
            "Default: from the file descriptor limit, at most 1024.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    max_session_profiles: Annotated[
        int | None,
        typer.Option(
            "--max-session-profiles",
            metavar="N",
            min=1,
            help="Profiles one session may hold, open upload slots included; more are refused. Default: no limit.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    max_session_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-session-bytes",
            metavar="BYTES",
            min=1,
            help="Bytes of profiles one session may store; uploads past it are refused. Default: no limit.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    max_open_slots: Annotated[
        int,
        typer.Option(
            "--max-open-slots",
            metavar="N",
            min=1,
            help="Upload slots one session may have asked for and not PUT yet; more are answered 429.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_MAX_OPEN_SLOTS,
    session_rate: Annotated[
        float,
        typer.Option(
            "--session-rate",
            metavar="PER_MINUTE",
            min=0,
            help="Sessions one client (address) may create per minute after --session-burst; 0: no limit. Per process.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_SESSION_RATE,
    session_burst: Annotated[
        int,
        typer.Option(
            "--session-burst",
            metavar="N",
            min=1,
            help="Sessions a client may create at once.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_SESSION_BURST,
    slot_rate: Annotated[
        float,
        typer.Option(
            "--slot-rate",
            metavar="PER_SECOND",
            min=0,
            help="Upload slots one client may ask for per second after --slot-burst (a slot with more than 4 KiB "
            "of tags and alias counts once per 4 KiB); 0: no limit. Per process.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_SLOT_RATE,
    slot_burst: Annotated[
        int,
        typer.Option(
            "--slot-burst",
            metavar="N",
            min=1,
            help="Upload slots a client may ask for at once.",
            rich_help_panel=_SECURITY,
        ),
    ] = DEFAULT_SLOT_BURST,
    max_client_connections: Annotated[
        int | None,
        typer.Option(
            "--max-client-connections",
            metavar="N",
            min=1,
            help="Open connections one client address may hold, per process; more are answered 503. "
            "Default: half of --max-connections.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    guest_sessions: Annotated[
        OnOff,
        typer.Option(
            "--guest-sessions",
            metavar="on|off",
            case_sensitive=False,
            help="off: refuse guest sessions and guest uploads (a team server that only takes keyed writes).",
            rich_help_panel=_SECURITY,
        ),
    ] = OnOff.on,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            "--metrics-token",
            metavar="TOKEN",
            help="Bearer token /metrics needs when the server is not bound to loopback (where it is open). "
            f"Visible to other local users (ps): prefer ${METRICS_TOKEN_ENV}.",
            rich_help_panel=_SECURITY,
            show_default=False,
        ),
    ] = None,
    metrics_max_series: Annotated[
        int,
        typer.Option(
            "--metrics-max-series",
            metavar="N",
            min=1,
            help="Per-column series /metrics writes at most (sessions most recently updated first).",
        ),
    ] = 10_000,
    smtp_url: Annotated[
        str | None,
        typer.Option(
            "--smtp-url",
            metavar="URL",
            help="SMTP server of the email [[notify]] targets: smtp://USER@HOST:PORT[?from=ADDRESS] (STARTTLS where "
            "offered) or smtps://...; the password from $SONGBIRD_SMTP_PASSWORD. Default: $SONGBIRD_SMTP_URL.",
            show_default=False,
        ),
    ] = None,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            metavar="DURATION",
            help="Delete profiles uploaded longer ago than this (e.g. 400d, 12h, 30s), bytes included, and "
            "sessions left empty. Default: keep everything.",
            show_default=False,
        ),
    ] = None,
    no_access_log: Annotated[bool, typer.Option("--no-access-log", help="Do not log each request.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.", show_default=False)] = False,
) -> None:
    """Run the songbird-compatible server and observatory in the foreground (Ctrl-C stops it)."""
    try:
        from whylogs_songbird.server.in_process import run_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        typer.echo(
            f"error: the server needs the 'server' extra ({exc.name} is missing): "
            "pip install 'whylogs-songbird[server]'.",
            err=True,
        )
        raise typer.Exit(2) from None
    options = {name: value for name, value in locals().items() if name in _CONFIG_OPTIONS}
    try:
        config = config_from_options(**options)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if config.monitors is not None:
        from whylogs_songbird.monitors import MonitorsError, load_monitors
        from whylogs_songbird.server.notify import check_targets

        try:
            check_targets(load_monitors(config.monitors), smtp_url=config.smtp_url)
        except MonitorsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    _check_port_free(host, port)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    shown_host = shared_address(host)
    logger.info(
        "songbird server on http://%s:%d (%s, %d API keys, upload URLs live %d s, %d workers); "
        "publish to it with SONGBIRD_API_ENDPOINT=http://%s:%d",
        shown_host,
        port,
        storage_description(config),
        len(config.api_keys),
        config.url_ttl_seconds,
        config.workers,
        shown_host,
        port,
    )
    if not is_loopback_host(host):
        logger.warning("listening on %s: anyone who can reach this address can create sessions and upload.", host)
        if config.list_sessions:
            logger.warning("--list-sessions on %s: anyone who can reach it can open every session listed.", host)
    if config.api_key_file is not None and config.api_key_file.stat().st_mode & 0o077:
        logger.warning("%s holds API keys and other users may read it: chmod 600 it.", config.api_key_file)
    if config.fault_rate:
        logger.warning("fault injection is on: %g of API requests fail (seed %s)", config.fault_rate, config.fault_seed)
    from whylogs_songbird.server.storage.base import StorageConfigError, StorageUnavailableError

    try:
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after its graceful shutdown
            run_server(config, access_log=not no_access_log)
    except (StorageConfigError, StorageUnavailableError) as exc:  # their messages say what to check
        if verbose:
            logger.debug("the storage failure in full", exc_info=exc)
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(2 if isinstance(exc, StorageConfigError) else 1) from None
    logger.info("songbird server stopped.")


#: ``python -m whylogs_songbird.server``: :func:`serve_command` as the only command.
app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}
)
app.command(name="serve", cls=TidyCommand)(serve_command)


def main(argv: list[str] | None = None) -> int:
    """Run :data:`app` with ``argv`` (default: the process's arguments); return the exit code."""
    try:
        result = app(args=argv, prog_name="python -m whylogs_songbird.server", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:  # click's usage errors carry their own exit code
        show = getattr(exc, "show", None)
        if callable(show):
            show()
            return int(getattr(exc, "exit_code", 2))
        raise
    return result if isinstance(result, int) else 0  # click hands back a typer.Exit's code when not standalone


__all__ = ["app", "config_from_options", "default_data_dir", "main", "parse_args", "serve_command", "shared_address"]
