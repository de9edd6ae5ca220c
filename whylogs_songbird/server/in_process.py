"""Running the server in this process: in a background thread (:class:`LocalServer`) or in the
foreground (:func:`run_server`, which hands ``--workers N`` to :mod:`~whylogs_songbird.server.workers`)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from whylogs_songbird.server.app import create_app
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.sandbox import Sandbox
from whylogs_songbird.server.serving import (
    Server,
    bind_socket,
    open_store,
    setup_server_logs,
    uvicorn_config,
)
from whylogs_songbird.server.store import Store
from whylogs_songbird.server.workers import serve_workers

logger = logging.getLogger("whylogs_songbird.server")

_LOOPBACK = "127.0.0.1"


def run_server(config: ServerConfig, *, access_log: bool = True) -> None:
    """Serve until interrupted (Ctrl-C). Logs go to stderr; query strings are never logged.

    With ``config.workers`` above 1, several processes share the socket (see ``workers.py``)."""
    if config.workers > 1:
        serve_workers(config, access_log=access_log)
        return
    store = open_store(config)
    uv_config = uvicorn_config(create_app(config, store), config, access_log=access_log)
    setup_server_logs()
    try:
        sock = bind_socket(config.host, config.port)
    except BaseException:
        store.close()
        raise
    try:
        Server(uv_config).run(sockets=[sock])
    finally:
        sock.close()
        store.close()


class LocalServer:
    """A server on a free loopback port in a daemon thread; a context manager.

    ``data_dir=None`` uses a temporary directory that is removed on stop. ``sandbox``: one of
    ``app.sandbox_for(config)`` to read uploads in, kept open at stop (servers started one after
    another may share its children); by default the server makes its own. Other keyword
    arguments are :class:`ServerConfig` fields (``api_keys``, ``url_ttl_seconds``, ...).

    >>> with LocalServer(api_keys=["key.secret"]) as server:
    ...     requests.post(f"{server.url}/v0/sessions", json={"userId": "me"})
    """

    def __init__(
        self, data_dir: str | Path | None = None, *, port: int = 0, sandbox: Sandbox | None = None, **config: Any
    ) -> None:
        if "host" in config and config.pop("host") != _LOOPBACK:
            raise ValueError("LocalServer only listens on 127.0.0.1")
        self._temp_dir: str | None = None
        if data_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="songbird-server-")
            data_dir = self._temp_dir
        self.config = ServerConfig(host=_LOOPBACK, port=port, data_dir=Path(data_dir), **config)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._sandbox = sandbox
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
        """Calls per operation since this start, and the disk used (as ``/_local/stats`` answers)."""
        from whylogs_songbird.server.lifecycle import disk_usage

        return {**self.store.stats(), **disk_usage(self.store)}

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving and wait until the server accepts connections."""
        if self._thread is not None:
            return self
        sock = bind_socket(_LOOPBACK, self.config.port)
        port = sock.getsockname()[1]
        self._store = open_store(self.config)
        app = create_app(self.config, self._store, self._sandbox)
        self.app = app
        if app.state.notifier is not None and self.config.public_url is None:
            app.state.notifier.base_url = f"http://{_LOOPBACK}:{port}"  # links name the port picked
        server = Server(uvicorn_config(app, self.config, access_log=False, in_process=True))
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


__all__ = ["LocalServer", "run_server"]
