"""Server processes for tests and benchmarks that need a real ``python -m whylogs_songbird.server``
(kill -9, restarts, several workers, CPU measured from outside), and the small HTTP steps tests repeat."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from services import free_port

TIMEOUT = 30
TS = 1_700_000_000_000


def new_slot(url, session_id, ts=TS, tags=()):
    body = {"datasetTimestamp": ts, "segmentTags": [{"key": k, "value": v} for k, v in tags]}
    r = requests.post(f"{url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def start_server_process(data_dir, *extra):
    port = free_port()
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*command, "--no-access-log", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except AssertionError:
        stop(process)
        raise
    return process, url


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], *, seconds: float = 60, log: Path | None = None, timeout: float = 5
) -> None:
    """Wait until the server process at ``url`` answers ``/healthz``; AssertionError (with the tail
    of ``log``) when it exits or ``seconds`` pass first. A refused connection or a slow answer of a
    server still starting (``timeout``) is waited on."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/healthz", timeout=timeout).ok:
                return
        assert process.poll() is None, log.read_text()[-3000:] if log else "the server exited while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    process.stderr.close()


#: Benchmarks are load generators on one address: the per-client rate limits are off for them
#: (a later option given in ``extra`` wins).
NO_CLIENT_RATE_LIMITS = ("--session-rate", "0", "--slot-rate", "0")


@contextlib.contextmanager
def server_process(
    data_dir: Path, *extra: str, client_limits: bool = False
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m whylogs_songbird.server`` on a free loopback port (``extra`` options appended,
    after :data:`NO_CLIENT_RATE_LIMITS` unless ``client_limits``); yields its URL and process."""
    port = free_port()
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*command, "--no-access-log", *(() if client_limits else NO_CLIENT_RATE_LIMITS), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its children (``--workers``, sandbox children) have used
    so far, the children that ended and were waited for included (Linux ``/proc``), so a child
    replaced during a measurement is counted too."""
    total = 0.0
    for one in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(child) for child in text)
    return found
