"""What deletion tests look at in a store (blob keys, rows, summaries), and a server process to crash."""

from __future__ import annotations

import time
from pathlib import Path

from team_server import server_process as _server_process  # noqa: F401 - the deletion tests' server

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


def _open_store(data_dir: Path, storage_config: dict) -> Store:
    from whylogs_songbird.server.config import ServerConfig

    return Store.open(ServerConfig(data_dir=data_dir, **storage_config))
