"""What deletion tests look at in a store (blob keys, rows, summaries), and a server process to crash."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import requests
from conftest import free_port

from whylogs_songbird.server.store import Store


def _keys(store: Store, session_id: str) -> list[str]:
    return sorted(store.blobs.list_keys(f"profiles/{session_id}/"))


def _rows(store: Store, table: str, column: str, value: str) -> int:
    rows = store.metadata._query(f"SELECT COUNT(*) AS n FROM {table} WHERE {column} = ?", (value,))  # type: ignore[attr-defined]
    return int(rows[0]["n"])


def _summaries(store: Store, session_id: str) -> int:
    rows = store.metadata._query(  # type: ignore[attr-defined]
        "SELECT COUNT(*) AS n FROM summaries WHERE upload_id IN (SELECT id FROM uploads WHERE session_id = ?)",
        (session_id,),
    )
    return int(rows[0]["n"])


def _wait(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@contextlib.contextmanager
def _server_process(data_dir: Path, storage_config: dict, env: dict):
    port = free_port()
    command = [sys.executable, "-m", "whylogs_songbird.server", "--port", str(port), "--data-dir", str(data_dir)]
    for name in ("database_url", "blob_store", "s3_endpoint_url"):
        if name in storage_config:
            command += [f"--{name.replace('_', '-')}", storage_config[name]]
    command.append("--no-access-log")
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{url}/healthz", timeout=2).ok:
                        break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _open_store(data_dir: Path, storage_config: dict) -> Store:
    from whylogs_songbird.server.config import ServerConfig

    return Store.open(ServerConfig(data_dir=data_dir, **storage_config))
