"""What every way of running the server shares: the listening socket, the store made ready to
serve, the server log's filters, and the one uvicorn configuration.

The in-thread :class:`~whylogs_songbird.server.in_process.LocalServer`, the foreground
:func:`~whylogs_songbird.server.in_process.run_server` and the worker processes of
:mod:`~whylogs_songbird.server.workers` all build their uvicorn settings with
:func:`uvicorn_config`, so a setting added there applies to all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.connections import install_log_rate_limit, uvicorn_options
from whylogs_songbird.server.lifecycle import deletions
from whylogs_songbird.server.store import Store


class Server(uvicorn.Server):
    """uvicorn's server, waking once a second while idle instead of ten times: its tick only
    refreshes the ``Date`` header (once a second anyway) and looks for the order to stop, which now
    wakes it at once (a signal, or ``should_exit`` set from another thread)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_now: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._loop is not None and self._exit_now is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: it has stopped
                self._loop.call_soon_threadsafe(self._exit_now.set)

    async def main_loop(self) -> None:
        self._loop, self._exit_now = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter += 10  # a tick a second: each one refreshes the Date header
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit_now.wait(), 1.0)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (protocol ``IPPROTO_TCP``, so connections get TCP_NODELAY).

    asyncio sets ``TCP_NODELAY`` only on connections whose socket says so, and a socket made with
    protocol 0 leaves Nagle's algorithm on, so every keep-alive request would wait ~40 ms for a
    delayed ACK. The socket is inheritable, for worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def open_store(config: ServerConfig) -> Store:
    """The store of ``config``, made ready to serve: reconciled (what a crash left behind) and,
    on a store no other host uses (the embedded one), with its operation counters at zero. A start
    resets nothing shared: on a team store the counters are every host's, and other hosts keep
    counting while this one restarts. Run once per server, before any worker serves."""
    store = Store.open(config)
    try:
        # a team host's start never lists the bucket: its sweeper scans now and then (Store.reconcile)
        store.reconcile(scan=not store.shared)
        if not store.shared:
            # one server owns this store: the claims and counts of its previous run end with it. On a
            # shared store they may be another live host's: its purge claims run out with their lease.
            deletions(store).release_purge_claims()
            store.reset_stats()
    except BaseException:
        store.close()
        raise
    return store


class RedactQueryFilter(logging.Filter):
    """Strips query strings from uvicorn access-log lines (upload URLs carry signatures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?<redacted>", *args[3:])
        return True


_REDACT = RedactQueryFilter()


def setup_server_logs() -> None:
    """The server log of a process that serves (not of a host process embedding the server): access
    lines without query strings, repeated warnings rate-limited, and whylogs quiet (it logs every
    chunk it reads at INFO; the server log is for requests and problems). Idempotent."""
    logging.getLogger("uvicorn.access").addFilter(_REDACT)
    install_log_rate_limit()
    logging.getLogger("whylogs").setLevel(logging.WARNING)


def proxy_options(config: ServerConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments of forwarded headers: ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed only from ``config.forwarded_allow_ips``. Empty (the default)
    turns them off: uvicorn's own default believes any loopback client, which could then forge the
    logged client address and the scheme of the upload URLs."""
    if not config.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(config.forwarded_allow_ips)}


def uvicorn_config(app: Any, config: ServerConfig, *, access_log: bool, in_process: bool = False) -> uvicorn.Config:
    """The uvicorn settings of every server: ``config``'s address, timeouts and connection cap
    (per process), forwarded headers only from its trusted proxies (:func:`proxy_options`), no
    ``Server`` header, five seconds of graceful shutdown.

    ``in_process``: the server runs in a thread of someone else's process, so uvicorn leaves that
    process's logging alone, and a failing startup fails the start instead of serving without it.
    """
    options: dict[str, Any] = {"log_config": None, "lifespan": "on"} if in_process else {"log_level": "info"}
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        access_log=access_log,
        timeout_graceful_shutdown=5,
        server_header=False,
        **options,
        **uvicorn_options(config.connection_limits),
        **proxy_options(config),
    )


__all__ = [
    "RedactQueryFilter",
    "Server",
    "bind_socket",
    "open_store",
    "proxy_options",
    "setup_server_logs",
    "uvicorn_config",
]
