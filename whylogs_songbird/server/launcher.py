"""Several server processes on one listening socket (``--workers N``).

The parent prepares the data dir once (reconciliation, counters reset, the URL-signing secret),
binds the socket, and starts ``N`` worker processes that each run uvicorn on that socket; the
kernel spreads connections between them. A worker that dies is started again; Ctrl-C or SIGTERM
stops them all.

The socket is made by :func:`whylogs_songbird.server.serving.bind_socket`, with ``IPPROTO_TCP``
spelled out (a socket made with protocol 0, as ``uvicorn --workers`` shares it, leaves Nagle's
algorithm on, so every keep-alive request would wait ~40 ms for a delayed ACK).

Nothing that matters lives in one worker's memory: sessions, uploads, digests and counters are
in the store (SQLite serializes writers across processes); the secret is a file.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.serving import bind_socket, open_store, setup_server_logs, uvicorn_config

logger = logging.getLogger("whylogs_songbird.server")

#: A worker that dies sooner than this after its start is not restarted (it would die again).
_MIN_UPTIME_SECONDS = 5.0


def _worker_main(config: ServerConfig, sock: socket.socket, access_log: bool, index: int) -> None:
    """One worker process: the app over the shared socket until told to stop."""
    import uvicorn

    from whylogs_songbird.server.app import create_app
    from whylogs_songbird.server.store import Store

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_server_logs()
    store = Store.open(config)
    try:
        app = create_app(config, store)
        uvicorn.Server(uvicorn_config(app, config, access_log=access_log)).run(sockets=[sock])
    finally:
        store.close()


def serve_workers(config: ServerConfig, *, access_log: bool = True) -> None:
    """Serve with ``config.workers`` processes until Ctrl-C or SIGTERM."""
    from whylogs_songbird.server.signing import load_or_create_health_token, load_or_create_secret

    open_store(config).close()  # reconcile and reset counters once, before any worker serves
    load_or_create_secret(config.data_dir)
    load_or_create_health_token(config.data_dir)
    sock = bind_socket(config.host, config.port)
    context = multiprocessing.get_context("spawn")
    workers: dict[int, tuple[BaseProcess, float]] = {}
    stopping = False

    def start(index: int) -> None:
        process = context.Process(
            target=_worker_main, args=(config, sock, access_log, index), name=f"songbird-worker-{index}"
        )
        process.start()
        workers[index] = (process, time.monotonic())

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(config.workers):
            start(index)
        logger.info("%d server processes on %s:%d", config.workers, config.host, config.port)
        while not stopping:
            time.sleep(0.2)
            for index, (process, started) in list(workers.items()):
                if process.is_alive() or stopping:
                    continue
                if time.monotonic() - started < _MIN_UPTIME_SECONDS:
                    logger.error("server process %d exited at start (code %s); stopping", index, process.exitcode)
                    stopping = True
                    break
                logger.warning("server process %d exited (code %s); starting it again", index, process.exitcode)
                start(index)
    finally:
        for process, _ in workers.values():
            if process.is_alive():
                process.terminate()
        for process, _ in workers.values():
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["bind_socket", "serve_workers"]
