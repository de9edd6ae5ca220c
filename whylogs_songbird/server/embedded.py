"""Running the server: in a background thread (:class:`LocalServer`) or blocking (:func:`run_server`)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from whylogs_songbird.server.app import create_app
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.connections import install_log_rate_limit, uvicorn_options
from whylogs_songbird.server.store import Store

logger = logging.getLogger("whylogs_songbird.server")

_LOOPBACK = "127.0.0.1"


def open_store(config: ServerConfig) -> Store:
    """The store of ``config``, made ready to serve: reconciled (what a crash left behind) and
    with its operation counters at zero. Run once per server, before any worker serves."""
    store = Store.open(config)
    try:
        store.reconcile()
        store.reset_stats()
    except BaseException:
        store.close()
        raise
    return store


def proxy_options(config: ServerConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments of forwarded headers: ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed only from ``config.forwarded_allow_ips``. Empty (the default)
    turns them off: uvicorn's own default believes any loopback client, which could then forge the
    logged client address and the scheme of the upload URLs."""
    if not config.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(config.forwarded_allow_ips)}


class RedactQueryFilter(logging.Filter):
    """Strips query strings from uvicorn access-log lines (upload URLs carry signatures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?<redacted>", *args[3:])
        return True


def run_server(config: ServerConfig, *, access_log: bool = True) -> None:
    """Serve until interrupted (Ctrl-C). Logs go to stderr; query strings are never logged.

    With ``config.workers`` above 1, several processes share the socket (see ``launcher.py``)."""
    if config.workers > 1:
        from whylogs_songbird.server.launcher import serve_workers

        serve_workers(config, access_log=access_log)
        return
    from whylogs_songbird.server.launcher import bind_socket

    store = open_store(config)
    app = create_app(config, store)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=5,
        server_header=False,
        **uvicorn_options(config.connection_limits),
        **proxy_options(config),
    )
    logging.getLogger("uvicorn.access").addFilter(RedactQueryFilter())
    install_log_rate_limit()
    # whylogs logs every chunk it reads at INFO: the server log is for requests and problems.
    logging.getLogger("whylogs").setLevel(logging.WARNING)
    try:
        sock = bind_socket(config.host, config.port)
    except BaseException:
        store.close()
        raise
    try:
        uvicorn.Server(uv_config).run(sockets=[sock])
    finally:
        sock.close()
        store.close()


class LocalServer:
    """A server on a free loopback port in a daemon thread; a context manager.

    ``data_dir=None`` uses a temporary directory that is removed on stop. Other keyword
    arguments are :class:`ServerConfig` fields (``api_keys``, ``url_ttl_seconds``, ...).

    >>> with LocalServer(api_keys=["key.secret"]) as server:
    ...     requests.post(f"{server.url}/v0/sessions", json={"userId": "me"})
    """

    def __init__(self, data_dir: str | Path | None = None, *, port: int = 0, **config: Any) -> None:
        if "host" in config and config.pop("host") != _LOOPBACK:
            raise ValueError("LocalServer only listens on 127.0.0.1")
        self._temp_dir: str | None = None
        if data_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="songbird-server-")
            data_dir = self._temp_dir
        self.config = ServerConfig(host=_LOOPBACK, port=port, data_dir=Path(data_dir), **config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        #: The running app (``app.state`` holds the store, the ingest worker and the page caches).
        self.app: Any = None
        self._error: BaseException | None = None
        self.url = ""

    def __repr__(self) -> str:
        state = f"running at {self.url}" if self._thread else "stopped"
        return f"LocalServer({state}, data_dir={str(self.config.data_dir)!r})"

    @property
    def store(self) -> Store:
        """The server's store (only while it runs)."""
        if self._store is None:
            raise RuntimeError("The server is not running; call start() first.")
        return self._store

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def stats(self) -> dict[str, int]:
        """Calls per operation since this start."""
        return self.store.stats()

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving and wait until the server accepts connections."""
        if self._thread is not None:
            return self
        from whylogs_songbird.server.launcher import bind_socket

        sock = bind_socket(_LOOPBACK, self.config.port)
        port = sock.getsockname()[1]
        self._store = open_store(self.config)
        app = create_app(self.config, self._store)
        self.app = app
        if app.state.notifier is not None and self.config.public_url is None:
            app.state.notifier.base_url = f"http://{_LOOPBACK}:{port}"  # links name the port picked
        uv_config = uvicorn.Config(
            app,
            access_log=False,
            log_config=None,  # leave the host process's logging alone
            lifespan="on",
            timeout_graceful_shutdown=5,
            server_header=False,
            **uvicorn_options(self.config.connection_limits),
            **proxy_options(self.config),
        )
        server = uvicorn.Server(uv_config)
        self._server = server
        self._error = None

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"songbird-server-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                error = self._error
                self.stop()
                raise RuntimeError(f"The local songbird server did not start: {error!r}")
            time.sleep(0.01)
        self.url = f"http://{_LOOPBACK}:{port}"
        logger.info("local songbird server listening on %s", self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, wait for the thread, close the store and remove a temporary data dir."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._store is not None:
            self._store.close()
        self._server = self._thread = self._store = None
        self.url = ""
        if self._temp_dir is not None:  # a restarted temporary server starts empty
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
