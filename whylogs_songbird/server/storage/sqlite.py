"""The embedded metadata store: SQLite in WAL mode, safe across threads and processes.

One connection per store, used under a lock; write transactions start with ``BEGIN IMMEDIATE``
and wait up to :data:`BUSY_TIMEOUT_MS` for another process's write, so several server processes
(``--workers``) share one database file consistently. Where the OS has ``flock`` (POSIX), the
processes also take turns at writing through a lock file beside the database: a waiting process
is woken the moment the lock is free, where SQLite's own busy wait sleeps 1, 2, 5, 10... ms
between tries, which under a steady stream of small writes costs more than the writes.

:meth:`SqliteMetadataStore.free_turn` takes both locks only if no one holds them: a caller on an
event loop then runs a short call there, without a hop to a worker thread, and never waits.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from whylogs_songbird.server.storage.sql import SQLITE, SqlMetadataStore

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - SQLite's busy timeout alone orders the writers there
    fcntl = None

#: The lock file beside the database, named ``<database>`` + this.
WRITE_LOCK_SUFFIX = ".write-lock"

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
        self._write_lock: int | None = None
        #: Whether the thread holding ``_lock`` holds the write lock already (:meth:`free_turn`).
        self._holding_write_lock = False
        if fcntl is not None:
            self._write_lock = os.open(f"{self.path}{WRITE_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._closed = False
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            #: Pages of WAL after which a commit checkpoints (SQLite's default), off in :meth:`free_turn`.
            self._autocheckpoint = int(self._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self._create_schema()
        for suffix in ("", "-wal", "-shm", WRITE_LOCK_SUFFIX):
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    def __repr__(self) -> str:
        return f"SqliteMetadataStore({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._write_lock is not None:
                    os.close(self._write_lock)
                    self._write_lock = None  # a write after close then fails in SQLite, as one expects

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._writing():
            self._conn.execute(self.dialect.begin)
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def free_turn(self) -> Iterator[bool]:
        """Hold this store (this process's lock, and the turn at writing among processes) if both
        are free now, without waiting: yields True while held, False (nothing held) when someone
        else has either, and always where there is no lock file to say whether another process
        writes (no ``flock``, or the store is closed). Under a True turn, the store's own calls in
        this thread wait for no one (WAL readers never block a writer), and a commit does not
        checkpoint (which writes and fsyncs the database): the next commit outside a turn does."""
        if self._write_lock is None or not self._lock.acquire(blocking=False):
            yield False
            return
        try:
            write_lock = self._write_lock  # None if the store was closed before the lock was ours
            if write_lock is None:
                yield False
                return
            try:
                fcntl.flock(write_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            self._holding_write_lock = True
            try:
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
                try:
                    yield True
                finally:
                    self._conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
            finally:
                self._holding_write_lock = False
                if self._write_lock is not None:  # None once closed meanwhile (closing released it)
                    fcntl.flock(self._write_lock, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's turn at writing, among the processes sharing the database (see the module docstring)."""
        if self._write_lock is None or self._holding_write_lock:  # no lock file, or :meth:`free_turn` holds it
            yield
            return
        fcntl.flock(self._write_lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._write_lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn
