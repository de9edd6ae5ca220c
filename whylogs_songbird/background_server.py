"""The embedded default: a local songbird server, started in the background on first use.

When no endpoint is set anywhere, the writer, ``publish`` and the CLI talk to
``http://127.0.0.1:<local_port>`` (8737 unless ``SONGBIRD_LOCAL_PORT`` says otherwise). If nothing
answers there, `ensure_server` starts the server (``python -m whylogs_songbird.server``) as a
detached process with its data, pid file and log in ``<user data dir>/whylogs-songbird/server``
(or ``SONGBIRD_LOCAL_DATA_DIR``), waits for its ``/healthz`` and goes on. A file lock in that
directory makes many processes starting at once end with exactly one server.
``songbird server status`` describes it and ``songbird server stop`` stops it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from filelock import FileLock, Timeout

from whylogs_songbird.config import Settings
from whylogs_songbird.errors import LocalServerError, SongbirdConnectionError
from whylogs_songbird.models import HEALTH_TOKEN_FILE, HEALTH_TOKEN_HEADER

logger = logging.getLogger("whylogs_songbird.local_server")  # its name before the module was renamed

HOST = "127.0.0.1"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
#: How long a started server may take to answer its health check.
START_TIMEOUT = 60.0
#: How long `stop_server` waits for the server to exit before it kills it.
STOP_TIMEOUT = 15.0
SERVICE = "songbird"

#: Servers this process spawned (so their exit is reaped), valid in this process only.
_PROCESSES: dict[int, subprocess.Popen[bytes]] = {}
_OWNER_PID = os.getpid()
_ANNOUNCED: set[tuple[int, str]] = set()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ServerStatus:
    """What the local server's ``/healthz`` says about it."""

    url: str
    pid: int | None
    data_dir: str | None
    started_at: int | None
    sessions: int | None
    version: str | None
    #: Profiles the server keeps bytes of, and those bytes (None: not told).
    stored_profiles: int | None = None
    stored_bytes: int | None = None

    @property
    def uptime_seconds(self) -> float | None:
        return None if self.started_at is None else max(0.0, time.time() - self.started_at / 1000)


class NotSongbird(Exception):
    """Something answers on the port, but it is not a songbird server."""


def local_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def server_command(port: int, data_dir: Path) -> list[str]:
    """The command line that starts the background server (kept in one place on purpose).

    It lists sessions on its home page (``--list-sessions``): it listens on loopback, for this machine."""
    return [
        sys.executable,
        "-m",
        "whylogs_songbird.server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--list-sessions",
    ]


def health_token(data_dir: Path | None) -> str | None:
    """The token that opens the details of ``/healthz`` of the server on ``data_dir`` (a file only
    that server's user can read); None when there is none to read."""
    if data_dir is None:
        return None
    try:
        token = (data_dir / HEALTH_TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def probe(port: int, timeout: float = 2.0, data_dir: Path | None = None) -> ServerStatus | None:
    """The status of the songbird server on ``port``; None if nothing listens; `NotSongbird` if another program does.

    ``/healthz`` tells pid, data dir, uptime and sessions only with the token of the server's data
    dir: pass ``data_dir`` to send it (without it, or with another server's, those are None)."""
    url = local_url(port)
    token = health_token(data_dir)
    headers = {HEALTH_TOKEN_HEADER: token} if token else {}
    try:
        response = requests.get(f"{url}/healthz", timeout=timeout, allow_redirects=False, headers=headers)
    except requests.exceptions.ConnectionError as exc:
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            raise NotSongbird(f"{url} accepted no connection in {timeout:g} s") from None
        return None
    except requests.exceptions.RequestException as exc:
        raise NotSongbird(f"{url} did not answer like a songbird server ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        raise NotSongbird(f"{url}/healthz answered {response.status_code} without a songbird health report")
    if body.get("service") not in (None, SERVICE):  # None: a songbird server older than the service field
        raise NotSongbird(f"{url}/healthz says it is {body.get('service')!r}, not songbird")

    def number(key: str) -> int | None:
        value = body.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return ServerStatus(
        url=url,
        pid=number("pid"),
        data_dir=body.get("data_dir") if isinstance(body.get("data_dir"), str) else None,
        started_at=number("started_at"),
        sessions=number("sessions"),
        version=body.get("version") if isinstance(body.get("version"), str) else None,
        stored_profiles=number("stored_profiles"),
        stored_bytes=number("stored_bytes"),
    )


def _port_taken(port: int, why: str) -> LocalServerError:
    return LocalServerError(
        f"Another program listens on {HOST}:{port} ({why}), so the local songbird server cannot start there. "
        "Set another port for it (SONGBIRD_LOCAL_PORT or local_port=...), or set an endpoint "
        "(SONGBIRD_API_ENDPOINT or endpoint=...)."
    )


def _require_server_extra() -> None:
    missing = [name for name in ("fastapi", "uvicorn", "jinja2") if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalServerError(
            f"No endpoint is set, and the local songbird server cannot start: the server extra is not installed "
            f'({", ".join(missing)} missing). Install it with pip install "whylogs-songbird[server]", or set an '
            "endpoint (SONGBIRD_API_ENDPOINT or endpoint=...)."
        )


def ensure_server(settings: Settings) -> ServerStatus:
    """Make sure the embedded default server answers on ``settings.local_port``; start it if nothing does."""
    port, data_dir = settings.local_port, settings.server_data_dir
    try:
        status = probe(port, data_dir=data_dir)
    except NotSongbird as exc:
        raise _port_taken(port, str(exc)) from None
    if status is None:
        status = _start(port, data_dir)
    _announce(status, data_dir)
    return status


def _announce(status: ServerStatus, data_dir: Path) -> None:
    """Once per process and server: say where profiles go and how to stop the server."""
    key = (status.pid or 0, status.url)
    with _LOCK:
        if key in _ANNOUNCED:
            return
        _ANNOUNCED.add(key)
    logger.info(
        "songbird: no endpoint is set, so profiles go to the local songbird server at %s (data in %s); "
        "stop it with `songbird server stop`.",
        status.url,
        status.data_dir or data_dir,
    )


def _start(port: int, data_dir: Path) -> ServerStatus:
    _require_server_extra()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(data_dir / LOCK_FILE), timeout=START_TIMEOUT + 10)
    try:
        with lock:
            try:
                status = probe(port, data_dir=data_dir)  # another process may have started it while we waited
            except NotSongbird as exc:
                raise _port_taken(port, str(exc)) from None
            if status is not None:
                return status
            _stop_one_on_another_port(port, data_dir)
            return _spawn(port, data_dir)
    except Timeout:
        raise LocalServerError(
            f"Another process held {data_dir / LOCK_FILE} for {lock.timeout:g} s while starting the local songbird "
            "server; try again."
        ) from None


def _stop_one_on_another_port(port: int, data_dir: Path) -> None:
    """One background server per data dir: stop the one this package started there on another port.

    The case of an upgrade from a release whose default port was 8787 (Dask's dashboard's too): the
    old server still runs there with the same data, so it is moved, not duplicated. Nothing is lost:
    the new one serves the same sessions and profiles."""
    recorded = read_pid_file(data_dir)
    if recorded is None or recorded.get("port") == port:
        return
    pid = int(recorded["pid"])
    if _alive(pid) and _looks_like_ours(pid) and _terminate(pid):
        logger.info(
            "songbird: stopped the local songbird server on port %s (pid %d) to start it on port %d (same data).",
            recorded.get("port"),
            pid,
            port,
        )


def _spawn(port: int, data_dir: Path) -> ServerStatus:
    log_path = data_dir / LOG_FILE
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            server_command(port, data_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    with _LOCK:
        _PROCESSES[process.pid] = process
    _write_pid(data_dir, process.pid, port)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            status = probe(port, data_dir=data_dir)
        except NotSongbird as exc:
            _terminate(process.pid)
            raise _port_taken(port, str(exc)) from None
        if status is not None and status.pid in (None, process.pid):
            logger.info("songbird: started the local songbird server at %s (pid %d)", status.url, process.pid)
            return status
        if process.poll() is not None:
            (data_dir / PID_FILE).unlink(missing_ok=True)
            raise LocalServerError(
                f"The local songbird server exited with code {process.returncode} while starting: "
                f"{_tail(log_path)} (full log: {log_path})."
            )
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise LocalServerError(
                f"The local songbird server did not answer within {START_TIMEOUT:g} s of starting; see {log_path}."
            )
        time.sleep(0.1)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


def _write_pid(data_dir: Path, pid: int, port: int) -> None:
    (data_dir / PID_FILE).write_text(json.dumps({"pid": pid, "port": port, "started": time.time()}), encoding="utf-8")


def read_pid_file(data_dir: Path) -> dict[str, Any] | None:
    """What the pid file of ``data_dir`` records (pid and port of the server this package started), if any."""
    try:
        data = json.loads((data_dir / PID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(pid: int) -> bool:
    process = _PROCESSES.get(pid) if os.getpid() == _OWNER_PID else None  # a forked child has no such children
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of this process that exited but was not reaped yet
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, wait, then SIGKILL; True once the process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid):
            break
    with _LOCK:
        _PROCESSES.pop(pid, None)
    return not _alive(pid)


@dataclass(frozen=True)
class StopReport:
    stopped_pid: int | None
    message: str


def stop_server(settings: Settings) -> StopReport:
    """Stop the background server this package started for ``settings`` (its pid file says which)."""
    data_dir, port = settings.server_data_dir, settings.local_port
    recorded = read_pid_file(data_dir)
    try:
        status = probe(port, data_dir=data_dir)
    except NotSongbird:
        status = None
    if recorded is None:
        if status is not None:
            return StopReport(
                None,
                f"the songbird server at {status.url} (pid {status.pid}) was not started by this package in "
                f"{data_dir}; stop it where it runs.",
            )
        return StopReport(None, f"no local songbird server runs at {local_url(port)}.")
    pid = int(recorded["pid"])
    if status is not None and status.pid not in (None, pid):
        return StopReport(
            None,
            f"the songbird server at {status.url} (pid {status.pid}) is not the one this package started "
            f"(pid {pid}); stop it where it runs.",
        )
    if not _alive(pid):
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return StopReport(None, f"no local songbird server runs at {local_url(port)} (removed a stale pid file).")
    # no pid in the answer (its health token is not this data dir's): make sure the recorded pid is still ours
    if (status is None or status.pid is None) and not _looks_like_ours(pid):
        (data_dir / PID_FILE).unlink(missing_ok=True)
        where = (
            f"no local songbird server runs at {local_url(port)}"
            if status is None
            else f"the songbird server at {status.url} was not started by this package in {data_dir}"
        )
        return StopReport(None, f"{where} (removed a stale pid file).")
    if not _terminate(pid):
        raise SongbirdConnectionError(f"The local songbird server (pid {pid}) did not stop; kill it by hand.")
    (data_dir / PID_FILE).unlink(missing_ok=True)
    with _LOCK:
        _ANNOUNCED.difference_update({k for k in _ANNOUNCED if k[0] == pid})
    return StopReport(pid, f"stopped the local songbird server at {local_url(port)} (pid {pid}).")


def _looks_like_ours(pid: int) -> bool:
    """Is ``pid`` running our server module? (So a recycled pid is never killed.)"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"whylogs_songbird.server" in cmdline
