"""The embedded metadata store: SQLite in WAL mode, safe across threads and processes.

One connection per store, used under a lock; write transactions start with ``BEGIN IMMEDIATE``
and wait up to :data:`BUSY_TIMEOUT_MS` for another process's write, so several server processes
(``--workers``) share one database file consistently.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from whylogs_songbird.server.storage.sql import SQLITE, SqlMetadataStore

#: How long a write waits for another connection's write transaction.
BUSY_TIMEOUT_MS = 30_000


class SqliteMetadataStore(SqlMetadataStore):
    """The metadata store in the SQLite file ``path`` (created 0600 with its directory)."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._closed = False
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        self._create_schema()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    def __repr__(self) -> str:
        return f"SqliteMetadataStore({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute(self.dialect.begin)
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn
