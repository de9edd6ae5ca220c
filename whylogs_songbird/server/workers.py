"""Several server processes on one listening socket (``--workers N``).

The parent prepares the data dir once (reconciliation, counters reset, the URL-signing secret),
binds the socket, and starts ``N`` worker processes that each run uvicorn on that socket; the
kernel spreads connections between them. A worker that dies is started again; Ctrl-C or SIGTERM
stops them all.

The socket is made by :func:`whylogs_songbird.server.serving.bind_socket`, with ``IPPROTO_TCP``
spelled out (a socket made with protocol 0, as ``uvicorn --workers`` shares it, leaves Nagle's
algorithm on, so every keep-alive request would wait ~40 ms for a delayed ACK).

Nothing that matters lives in one worker's memory: sessions, uploads, digests and counters are
in the store (SQLite serializes writers across processes); the secret is a file. The request
durations of ``/metrics`` are kept in prometheus_client's multiprocess mode: the launcher makes a
fresh directory ``<data-dir>/metrics-<pid>-<start>`` and names it in ``PROMETHEUS_MULTIPROC_DIR``
for the workers it spawns, so every worker's scrape adds up all of them; the directory (and any
left by a launcher that no longer runs) is removed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.serving import Server, bind_socket, open_store, setup_server_logs, uvicorn_config

logger = logging.getLogger("whylogs_songbird.server")

#: A worker that dies sooner than this after its start is not restarted (it would die again).
_MIN_UPTIME_SECONDS = 5.0


def _worker_main(config: ServerConfig, sock: socket.socket, access_log: bool, index: int) -> None:
    """One worker process: the app over the shared socket until told to stop."""
    from whylogs_songbird.server.app import create_app
    from whylogs_songbird.server.store import Store

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    setup_server_logs()
    store = Store.open(config)
    try:
        app = create_app(config, store)
        Server(uvicorn_config(app, config, access_log=access_log)).run(sockets=[sock])
    finally:
        store.close()


#: prometheus_client's multiprocess mode reads its directory from this variable (see metrics.py).
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_dir(data_dir: Path) -> Path:
    """A fresh, empty directory for the workers' request durations (see the module docstring);
    the directories of launchers that no longer run are removed."""
    for old in data_dir.glob("metrics-*-*"):
        pid = old.name.split("-")[1]
        if old.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = data_dir / f"metrics-{os.getpid()}-{int(time.time())}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _mark_dead(path: Path, pid: int | None) -> None:
    """Tell prometheus_client a worker is gone (its live gauges are dropped; counts stay)."""
    if pid is None:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:  # pragma: no cover - prometheus_client comes with the server extra
        return
    multiprocess.mark_process_dead(pid, str(path))


def serve_workers(config: ServerConfig, *, access_log: bool = True) -> None:
    """Serve with ``config.workers`` processes until Ctrl-C or SIGTERM."""
    from whylogs_songbird.server.signing import load_or_create_health_token, load_or_create_secret

    open_store(config).close()  # reconcile and reset counters once, before any worker serves
    load_or_create_secret(config.data_dir)
    load_or_create_health_token(config.data_dir)
    sock = bind_socket(config.host, config.port)
    shared = metrics_dir(config.data_dir)
    previous_env = os.environ.get(_MULTIPROC_ENV)
    os.environ[_MULTIPROC_ENV] = str(shared)  # inherited by the workers spawned below
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
                _mark_dead(shared, process.pid)
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
        if previous_env is None:
            os.environ.pop(_MULTIPROC_ENV, None)
        else:
            os.environ[_MULTIPROC_ENV] = previous_env
        shutil.rmtree(shared, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["bind_socket", "metrics_dir", "serve_workers"]
