"""A team server's sessions, upload slots and links over HTTP, and one started in its own process
(on PostgreSQL + S3, or the embedded store when ``storage_config`` names neither)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import requests
from server_processes import wait_healthy
from services import free_port

TS = 1_700_000_000_000


def new_session(url: str) -> str:
    answer = requests.post(f"{url}/v0/sessions", json={"userId": "team-test"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["id"]


def new_slot(url: str, session_id: str, ts: int = TS) -> dict:
    answer = requests.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": ts}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def link(url: str, session_id: str, timestamps=(), refs=()) -> requests.Response:
    return requests.post(
        f"{url}/v0/sessions/observatory-link/{session_id}",
        json={"batchProfileTimestamps": list(timestamps), "referenceProfileIds": list(refs)},
        timeout=10,
    )


@contextlib.contextmanager
def server_process(data_dir, storage_config, env, *extra: str):
    port = free_port()
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
    for name in ("database_url", "blob_store", "s3_endpoint_url"):  # the embedded store has none of them
        if name in storage_config:
            command += [f"--{name.replace('_', '-')}", storage_config[name]]
    command += ["--no-access-log", *extra]
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # a start under heavy load (tens of processes on two cores) takes tens of seconds
        wait_healthy(url, proc, log=data_dir.parent / f"server-{port}.log", timeout=2, seconds=180)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.close()
