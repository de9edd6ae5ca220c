"""Persistent state of the local server: SQLite metadata plus profile files on disk.

Layout of a data directory::

    songbird.sqlite3                           sessions and uploads (WAL mode)
    secret.key                                 the URL-signing secret (see signing.py)
    profiles/<session_id>/<upload_id>.bin      the bytes of each stored profile
    tmp/                                       bodies being received

An *upload* is a slot handed out by the upload/reference operations; it becomes a *profile*
once its bytes were PUT (``stored_at`` set). Times are epoch milliseconds, except
``expires_at`` which is in unix seconds like the ``expires`` of an upload URL.

Ids are made here and checked against :data:`ID_PATTERN` before any use in a path or a query,
so no path is ever built from anything a client chose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

UploadKind = Literal["batch", "reference"]

#: Every id the server makes: ``session-``, ``ref-`` (reference) or ``log-`` (batch) + random.
ID_PATTERN = re.compile(r"^(session|ref|log)-[A-Za-z0-9_-]{16,64}$")
_PREFIX_BY_KIND: dict[UploadKind, str] = {"batch": "log", "reference": "ref"}
#: A batch timestamp in a link (see :func:`parse_timestamp_selector`); ASCII digits only.
_TIMESTAMP_SELECTOR = re.compile(r"-?[0-9]{1,19}")

DB_FILE = "songbird.sqlite3"
#: Operations whose calls are counted (see :meth:`Store.stats`).
OPERATIONS = (
    "create_session",
    "upload",
    "reference",
    "references",
    "observatory_link",
    "get_session",
    "claim",
    "put",
    "observatory_page",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    claimed_at  INTEGER,
    claimed_org TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    id                TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    kind              TEXT NOT NULL CHECK (kind IN ('batch', 'reference')),
    dataset_timestamp INTEGER,
    alias             TEXT,
    segment_tags      TEXT NOT NULL DEFAULT '[]',
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    stored_at         INTEGER,
    size              INTEGER,
    sha256            TEXT,
    path              TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_session ON uploads (session_id, kind, dataset_timestamp);
CREATE INDEX IF NOT EXISTS sessions_by_created ON sessions (created_at);
"""

GUEST_ORG_ID = "guest"


class StoreError(Exception):
    """Base of the store's lookup errors."""


class UnknownUploadError(StoreError):
    """No upload has this id."""


class SessionClaimedError(StoreError):
    """The upload's session was claimed; it takes no more data."""


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


def new_id(prefix: Literal["session", "ref", "log"]) -> str:
    """A fresh id with 144 random bits, e.g. ``session-3q2…``."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def is_valid_id(value: str, prefix: str | None = None) -> bool:
    """Whether ``value`` is shaped like a server-made id (of the given prefix, if any)."""
    match = ID_PATTERN.match(value)
    return match is not None and (prefix is None or match.group(1) == prefix)


def parse_timestamp_selector(selector: str) -> int | None:
    """The batch dataset timestamp a link's ``profile=`` value names, or None when it is not one.

    A timestamp is an optional ``-`` and 1 to 19 ASCII digits, within the signed 64-bit range.
    """
    if _TIMESTAMP_SELECTOR.fullmatch(selector) is None:
        return None
    timestamp = int(selector)
    return timestamp if -(2**63) <= timestamp < 2**63 else None


@dataclass(frozen=True)
class SessionRecord:
    """One guest session. ``org_id`` is ``"guest"`` until the session is claimed."""

    id: str
    user_id: str
    org_id: str
    created_at: int
    claimed_at: int | None = None
    claimed_org: str | None = None

    @property
    def claimed(self) -> bool:
        return self.claimed_at is not None


@dataclass(frozen=True)
class UploadRecord:
    """One upload slot; a profile once ``stored_at`` is set."""

    id: str
    session_id: str
    kind: UploadKind
    dataset_timestamp: int | None
    alias: str | None
    segment_tags: tuple[tuple[str, str], ...]
    created_at: int
    expires_at: int
    stored_at: int | None = None
    size: int | None = None
    sha256: str | None = None
    path: str | None = None

    @property
    def stored(self) -> bool:
        return self.stored_at is not None


@dataclass(frozen=True)
class NewUpload:
    """What to create one upload slot for (see :meth:`Store.create_uploads`)."""

    kind: UploadKind
    dataset_timestamp: int | None = None
    alias: str | None = None
    segment_tags: tuple[tuple[str, str], ...] = ()


def _session_from_row(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        user_id=row["user_id"],
        org_id=row["org_id"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        claimed_org=row["claimed_org"],
    )


def _upload_from_row(row: sqlite3.Row) -> UploadRecord:
    tags = tuple((str(tag["key"]), str(tag["value"])) for tag in json.loads(row["segment_tags"]))
    return UploadRecord(
        id=row["id"],
        session_id=row["session_id"],
        kind=row["kind"],
        dataset_timestamp=row["dataset_timestamp"],
        alias=row["alias"],
        segment_tags=tags,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        stored_at=row["stored_at"],
        size=row["size"],
        sha256=row["sha256"],
        path=row["path"],
    )


def _require_id(value: str, prefix: str | None = None) -> None:
    if not is_valid_id(value, prefix):
        raise ValueError(f"not a server-made id: {value[:80]!r}")


class Store:
    """Sessions, uploads and profile bytes under one data directory; safe to share between threads.

    Every method is short and blocking: call it from a worker thread, not the event loop
    (except :meth:`count` and :meth:`stats`, which touch memory only).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.profiles_dir = self.data_dir / "profiles"
        self.tmp_dir = self.data_dir / "tmp"
        for directory in (self.data_dir, self.profiles_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()
        self._lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._conn = sqlite3.connect(self.data_dir / DB_FILE, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        self._closed = False

    def __repr__(self) -> str:
        return f"Store({str(self.data_dir)!r})"

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _clean_tmp(self) -> None:
        # Bodies left over by a server that stopped mid-upload; an hour is far longer than any PUT.
        cutoff = time.time() - 3600
        for leftover in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- counters -------------------------------------------------------------------------

    def count(self, operation: str) -> None:
        """Count one call of an API operation (in memory; starts at zero with each Store)."""
        with self._counts_lock:
            self._counts[operation] = self._counts.get(operation, 0) + 1

    def stats(self) -> dict[str, int]:
        """Calls per operation since this Store was opened."""
        with self._counts_lock:
            return dict(self._counts)

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, user_id: str) -> SessionRecord:
        """Start a new guest session for the installation ``user_id``."""
        record = SessionRecord(id=new_id("session"), user_id=user_id, org_id=GUEST_ORG_ID, created_at=now_ms())
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (id, user_id, org_id, created_at) VALUES (?, ?, ?, ?)",
                (record.id, record.user_id, record.org_id, record.created_at),
            )
        return record

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None when the id is unknown or malformed."""
        if not is_valid_id(session_id, "session"):
            return None
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session_from_row(rows[0]) if rows else None

    def claim(self, session_id: str, org_id: str) -> SessionRecord | None:
        """Claim an unclaimed session into ``org_id``; return the session as it is afterwards.

        A session claimed earlier is left as it was (compare its ``claimed_org``). Unknown → None.
        """
        if not is_valid_id(session_id, "session"):
            return None
        with self._transaction() as conn:
            conn.execute(
                "UPDATE sessions SET claimed_at = ?, claimed_org = ?, org_id = ? WHERE id = ? AND claimed_at IS NULL",
                (now_ms(), org_id, org_id, session_id),
            )
            rows = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchall()
        return _session_from_row(rows[0]) if rows else None

    def count_sessions(self) -> int:
        """How many sessions this store holds (for ``/healthz``)."""
        return int(self._query("SELECT COUNT(*) AS n FROM sessions")[0]["n"])

    def recent_sessions(self, limit: int = 20) -> list[SessionRecord]:
        """The newest sessions first."""
        rows = self._query("SELECT * FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
        return [_session_from_row(row) for row in rows]

    # -- uploads --------------------------------------------------------------------------

    def create_upload(
        self,
        session_id: str,
        kind: UploadKind,
        *,
        ttl_seconds: int,
        dataset_timestamp: int | None = None,
        alias: str | None = None,
        segment_tags: Sequence[tuple[str, str]] = (),
    ) -> UploadRecord:
        """Create one upload slot (see :meth:`create_uploads`)."""
        spec = NewUpload(kind=kind, dataset_timestamp=dataset_timestamp, alias=alias, segment_tags=tuple(segment_tags))
        return self.create_uploads(session_id, [spec], ttl_seconds=ttl_seconds)[0]

    def create_uploads(self, session_id: str, specs: Sequence[NewUpload], *, ttl_seconds: int) -> list[UploadRecord]:
        """Create upload slots in one transaction; they expire ``ttl_seconds`` from now.

        A reference without an alias is named after its id.
        """
        _require_id(session_id, "session")
        created = now_ms()
        expires = int(created / 1000) + ttl_seconds
        records = []
        for spec in specs:
            upload_id = new_id("log" if spec.kind == "batch" else "ref")
            alias = spec.alias if spec.alias is not None or spec.kind == "batch" else upload_id
            records.append(
                UploadRecord(
                    id=upload_id,
                    session_id=session_id,
                    kind=spec.kind,
                    dataset_timestamp=spec.dataset_timestamp,
                    alias=alias,
                    segment_tags=tuple(spec.segment_tags),
                    created_at=created,
                    expires_at=expires,
                )
            )
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO uploads (id, session_id, kind, dataset_timestamp, alias, segment_tags, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.id,
                        r.session_id,
                        r.kind,
                        r.dataset_timestamp,
                        r.alias,
                        json.dumps([{"key": k, "value": v} for k, v in r.segment_tags]),
                        r.created_at,
                        r.expires_at,
                    )
                    for r in records
                ],
            )
        return records

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        """The upload (stored or not), or None when the id is unknown or malformed."""
        if not (is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")):
            return None
        rows = self._query("SELECT * FROM uploads WHERE id = ?", (upload_id,))
        return _upload_from_row(rows[0]) if rows else None

    # -- profile bytes ----------------------------------------------------------------------

    def new_temp_file(self) -> tuple[int, Path]:
        """An open file descriptor and path of a fresh temporary file inside the data dir."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="body-", suffix=".part")
        return fd, Path(name)

    def store_profile_file(self, upload_id: str, source: Path, *, size: int, sha256: str) -> UploadRecord:
        """Move the (already validated) file ``source`` into place as the upload's profile.

        The rename is atomic and a later call replaces the bytes. Raises
        :class:`UnknownUploadError` or :class:`SessionClaimedError`; ``source`` is then left alone.
        """
        if not (is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")):
            raise UnknownUploadError(upload_id)
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT uploads.session_id, sessions.claimed_at FROM uploads JOIN sessions"
                " ON sessions.id = uploads.session_id WHERE uploads.id = ?",
                (upload_id,),
            ).fetchall()
            if not rows:
                raise UnknownUploadError(upload_id)
            session_id, claimed_at = rows[0]
            if claimed_at is not None:
                raise SessionClaimedError(session_id)
            _require_id(session_id, "session")
            relative = f"profiles/{session_id}/{upload_id}.bin"
            target = self.data_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            conn.execute(
                "UPDATE uploads SET stored_at = ?, size = ?, sha256 = ?, path = ? WHERE id = ?",
                (now_ms(), size, sha256, relative, upload_id),
            )
            row = conn.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return _upload_from_row(row)

    def store_profile_bytes(self, upload_id: str, data: bytes) -> UploadRecord:
        """Store ``data`` as the upload's profile (no validation: the caller checks the bytes)."""
        fd, tmp = self.new_temp_file()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.store_profile_file(upload_id, tmp, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        finally:
            tmp.unlink(missing_ok=True)

    def profile_path(self, upload: UploadRecord) -> Path:
        """Where a stored profile's bytes are."""
        if upload.path is None:
            raise ValueError(f"upload {upload.id} has no stored profile")
        _require_id(upload.session_id, "session")
        _require_id(upload.id)
        return self.profiles_dir / upload.session_id / f"{upload.id}.bin"

    def read_profile_bytes(self, upload: UploadRecord) -> bytes:
        """The bytes of a stored profile."""
        return self.profile_path(upload).read_bytes()

    # -- profile lookups (shared by the link operation and the observatory pages) ------------

    def list_profiles(self, session_id: str, kind: UploadKind | None = None) -> list[UploadRecord]:
        """The stored profiles of a session (of one kind, if given), oldest first."""
        if not is_valid_id(session_id, "session"):
            return []
        sql = "SELECT * FROM uploads WHERE session_id = ? AND stored_at IS NOT NULL"
        params: list[object] = [session_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._query(sql + " ORDER BY created_at, rowid", params)
        return [_upload_from_row(row) for row in rows]

    def find_batch_profiles(self, session_id: str, dataset_timestamp: int) -> list[UploadRecord]:
        """The stored batch profiles (all segments) of a session with this dataset timestamp."""
        if not is_valid_id(session_id, "session"):
            return []
        rows = self._query(
            "SELECT * FROM uploads WHERE session_id = ? AND kind = 'batch' AND dataset_timestamp = ?"
            " AND stored_at IS NOT NULL ORDER BY created_at, rowid",
            (session_id, dataset_timestamp),
        )
        return [_upload_from_row(row) for row in rows]

    def get_reference(self, session_id: str, reference_id: str) -> UploadRecord | None:
        """The stored reference profile ``reference_id`` of a session, or None."""
        if not (is_valid_id(session_id, "session") and is_valid_id(reference_id, "ref")):
            return None
        rows = self._query(
            "SELECT * FROM uploads WHERE id = ? AND session_id = ? AND kind = 'reference' AND stored_at IS NOT NULL",
            (reference_id, session_id),
        )
        return _upload_from_row(rows[0]) if rows else None

    def resolve_profile(self, session_id: str, selector: str) -> list[UploadRecord]:
        """The stored profiles a link's ``profile=`` value names, or [] when it names none.

        A selector is a batch ``datasetTimestamp`` (all segments with it), a reference id
        (``ref-…``) or a batch upload id (``log-…``).
        """
        timestamp = parse_timestamp_selector(selector)
        if timestamp is not None:
            return self.find_batch_profiles(session_id, timestamp)
        if is_valid_id(selector, "ref"):
            reference = self.get_reference(session_id, selector)
            return [reference] if reference else []
        if is_valid_id(selector, "log"):
            upload = self.get_upload(selector)
            if upload and upload.session_id == session_id and upload.stored:
                return [upload]
        return []
