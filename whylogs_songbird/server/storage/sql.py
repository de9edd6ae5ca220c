"""The SQL of the metadata stores, shared by SQLite and PostgreSQL.

Statements are written once, with ``?`` placeholders and ``{BIGINT}``/``{BLOB}`` type tokens; a
:class:`Dialect` turns them into what a database speaks. Upserts use ``INSERT ... ON CONFLICT
(...) DO UPDATE SET x = excluded.x``, which both databases understand. A subclass of
:class:`SqlMetadataStore` supplies connections (:meth:`SqlMetadataStore._transaction` and
:meth:`SqlMetadataStore._read`) and its dialect; everything else is here.

Rows are read through ``cursor.description``, so any DB-API driver works (sqlite3, psycopg).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from whylogs_songbird.server.storage.base import (
    GUEST_ORG_ID,
    INGEST_MAX_TRIES,
    OPERATIONS,
    NewUpload,
    SessionClaimedError,
    SessionRecord,
    StoredOutcome,
    UnknownUploadError,
    UploadKind,
    UploadRecord,
    is_valid_id,
    new_id,
    now_ms,
    require_id,
)

logger = logging.getLogger("whylogs_songbird.server.storage")

#: Bumped when the schema changes; kept in the ``meta`` table.
SCHEMA_VERSION = 3

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sessions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    created_at  {BIGINT} NOT NULL,
    claimed_at  {BIGINT},
    claimed_org TEXT
)""",
    """CREATE TABLE IF NOT EXISTS uploads (
    id                TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    kind              TEXT NOT NULL CHECK (kind IN ('batch', 'reference')),
    dataset_timestamp {BIGINT},
    alias             TEXT,
    segment_tags      TEXT NOT NULL DEFAULT '[]',
    created_at        {BIGINT} NOT NULL,
    expires_at        {BIGINT} NOT NULL,
    stored_at         {BIGINT},
    size              {BIGINT},
    sha256            TEXT,
    path              TEXT
)""",
    "CREATE INDEX IF NOT EXISTS uploads_by_session ON uploads (session_id, kind, dataset_timestamp)",
    "CREATE INDEX IF NOT EXISTS sessions_by_created ON sessions (created_at)",
    """CREATE TABLE IF NOT EXISTS summaries (
    upload_id  TEXT PRIMARY KEY REFERENCES uploads(id),
    sha256     TEXT NOT NULL,
    data       {BLOB} NOT NULL,
    created_at {BIGINT} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS derived (
    session_id TEXT NOT NULL,
    key        TEXT NOT NULL,
    data       {BLOB} NOT NULL,
    created_at {BIGINT} NOT NULL,
    PRIMARY KEY (session_id, key)
)""",
    """CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    n    {BIGINT} NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
)

#: Columns added after the first schema: (table, column, type), added at start when missing.
MIGRATIONS: tuple[tuple[str, str, str], ...] = (
    ("uploads", "ingest_state", "TEXT"),
    ("uploads", "ingest_error", "TEXT"),
    ("uploads", "ingest_lease", "{BIGINT}"),
    ("uploads", "duplicate_of", "TEXT"),
    # claims of a profile's summary so far: a profile whose summarising keeps crashing is given up on
    ("uploads", "ingest_tries", "INTEGER"),
)
#: Indexes over migrated columns (created after the migrations).
LATE_INDEXES = (
    # upload slots still waiting for their bytes (presigned PUTs straight to the blob store)
    "CREATE INDEX IF NOT EXISTS uploads_open ON uploads (expires_at) WHERE stored_at IS NULL",
    "CREATE INDEX IF NOT EXISTS uploads_by_ingest ON uploads (ingest_state, stored_at)",
)


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases: placeholders, DDL types, the statement that
    starts a write transaction, and how to list a table's columns."""

    name: str
    placeholder: str = "?"
    bigint: str = "INTEGER"
    blob: str = "BLOB"
    begin: str = "BEGIN"
    #: A query of one table's column names; ``?`` is the table name.
    columns_query: str = ""

    def sql(self, statement: str) -> str:
        """``statement`` in this dialect (placeholders and type tokens replaced)."""
        text = statement.replace("{BIGINT}", self.bigint).replace("{BLOB}", self.blob)
        if self.placeholder != "?":
            text = text.replace("?", self.placeholder)
        return text


SQLITE = Dialect(name="sqlite", begin="BEGIN IMMEDIATE", columns_query="SELECT name FROM pragma_table_info(?)")
POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    bigint="BIGINT",
    blob="BYTEA",
    columns_query="SELECT column_name FROM information_schema.columns WHERE table_name = ? "
    "AND table_schema = current_schema()",
)


def _session_from_row(row: dict[str, Any]) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        user_id=row["user_id"],
        org_id=row["org_id"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        claimed_org=row["claimed_org"],
    )


def _tags_json(tags: Sequence[tuple[str, str]]) -> str:
    return json.dumps([{"key": k, "value": v} for k, v in tags])


def _upload_from_row(row: dict[str, Any]) -> UploadRecord:
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
        ingest_state=row.get("ingest_state"),
        ingest_error=row.get("ingest_error"),
        duplicate_of=row.get("duplicate_of"),
        ingest_tries=int(row.get("ingest_tries") or 0),
    )


def _is_upload_id(value: str) -> bool:
    return is_valid_id(value, "log") or is_valid_id(value, "ref")


class SqlMetadataStore:
    """The metadata store over any DB-API connection, in a :class:`Dialect`.

    Subclasses implement :meth:`_transaction` (a connection inside a write transaction, committed
    on exit, rolled back on error) and :meth:`_read` (a connection for reads), then call
    :meth:`_create_schema` once.
    """

    dialect: Dialect = SQLITE

    # -- connection hooks ---------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------

    def _exec(self, conn: Any, statement: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        """Run one statement; its rows as dicts (empty for statements without rows)."""
        cursor = conn.cursor()
        try:
            cursor.execute(self.dialect.sql(statement), tuple(params))
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def _rowcount(self, conn: Any, statement: str, params: Sequence[object] = ()) -> int:
        cursor = conn.cursor()
        try:
            cursor.execute(self.dialect.sql(statement), tuple(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _query(self, statement: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        with self._read() as conn:
            return self._exec(conn, statement, params)

    def _create_schema(self) -> None:
        """Create the tables, add columns of later versions, record the schema version (idempotent)."""
        with self._transaction() as conn:
            for statement in SCHEMA:
                self._exec(conn, statement)
            for table, column, kind in MIGRATIONS:
                present = {row[next(iter(row))] for row in self._exec(conn, self.dialect.columns_query, (table,))}
                if column not in present:
                    self._exec(conn, f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    logger.info("storage: added column %s.%s", table, column)
            for statement in LATE_INDEXES:
                self._exec(conn, statement)
            # profiles stored before ingest states existed are summarised like new ones
            self._exec(
                conn,
                "UPDATE uploads SET ingest_state = 'pending' WHERE stored_at IS NOT NULL"
                " AND ingest_state IS NULL AND duplicate_of IS NULL",
            )
            self._exec(
                conn,
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    # -- sessions ------------------------------------------------------------------------------

    def create_session(self, user_id: str) -> SessionRecord:
        record = SessionRecord(id=new_id("session"), user_id=user_id, org_id=GUEST_ORG_ID, created_at=now_ms())
        with self._transaction() as conn:
            self._exec(
                conn,
                "INSERT INTO sessions (id, user_id, org_id, created_at) VALUES (?, ?, ?, ?)",
                (record.id, record.user_id, record.org_id, record.created_at),
            )
        return record

    def get_session(self, session_id: str) -> SessionRecord | None:
        if not is_valid_id(session_id, "session"):
            return None
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session_from_row(rows[0]) if rows else None

    def claim(self, session_id: str, org_id: str) -> SessionRecord | None:
        if not is_valid_id(session_id, "session"):
            return None
        with self._transaction() as conn:
            self._exec(
                conn,
                "UPDATE sessions SET claimed_at = ?, claimed_org = ?, org_id = ? WHERE id = ? AND claimed_at IS NULL",
                (now_ms(), org_id, org_id, session_id),
            )
            rows = self._exec(conn, "SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session_from_row(rows[0]) if rows else None

    def recent_sessions(self, limit: int = 20) -> list[SessionRecord]:
        rows = self._query("SELECT * FROM sessions ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
        return [_session_from_row(row) for row in rows]

    def session_count(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM sessions")
        return int(rows[0]["n"])

    # -- uploads ---------------------------------------------------------------------------------

    def create_uploads(self, session_id: str, specs: Sequence[NewUpload], *, ttl_seconds: int) -> list[UploadRecord]:
        require_id(session_id, "session")
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
            for r in records:
                self._exec(
                    conn,
                    "INSERT INTO uploads (id, session_id, kind, dataset_timestamp, alias, segment_tags, created_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.id,
                        r.session_id,
                        r.kind,
                        r.dataset_timestamp,
                        r.alias,
                        _tags_json(r.segment_tags),
                        r.created_at,
                        r.expires_at,
                    ),
                )
        return records

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        if not _is_upload_id(upload_id):
            return None
        rows = self._query("SELECT * FROM uploads WHERE id = ?", (upload_id,))
        return _upload_from_row(rows[0]) if rows else None

    def _open_upload(self, conn: Any, upload_id: str) -> UploadRecord:
        if not _is_upload_id(upload_id):
            raise UnknownUploadError(upload_id)
        rows = self._exec(
            conn,
            "SELECT uploads.*, sessions.claimed_at AS session_claimed_at FROM uploads JOIN sessions"
            " ON sessions.id = uploads.session_id WHERE uploads.id = ?",
            (upload_id,),
        )
        if not rows:
            raise UnknownUploadError(upload_id)
        if rows[0]["session_claimed_at"] is not None:
            raise SessionClaimedError(rows[0]["session_id"])
        return _upload_from_row(rows[0])

    def check_upload_open(self, upload_id: str) -> UploadRecord:
        with self._read() as conn:
            return self._open_upload(conn, upload_id)

    def _duplicate(self, conn: Any, upload: UploadRecord, sha256: str) -> UploadRecord | None:
        if upload.kind != "batch":
            return None
        rows = self._exec(
            conn,
            "SELECT * FROM uploads WHERE session_id = ? AND kind = 'batch' AND dataset_timestamp = ? AND sha256 = ?"
            " AND id <> ? AND stored_at IS NOT NULL AND duplicate_of IS NULL ORDER BY stored_at, id",
            (upload.session_id, upload.dataset_timestamp, sha256, upload.id),
        )
        wanted = sorted(upload.segment_tags)
        for row in rows:
            candidate = _upload_from_row(row)
            if sorted(candidate.segment_tags) == wanted:
                return candidate
        return None

    def open_upload_and_duplicate(self, upload_id: str, sha256: str) -> tuple[UploadRecord, UploadRecord | None]:
        with self._read() as conn:
            upload = self._open_upload(conn, upload_id)
            return upload, self._duplicate(conn, upload, sha256)

    def mark_stored(self, upload_id: str, *, key: str | None, size: int, sha256: str) -> StoredOutcome:
        with self._transaction() as conn:
            upload = self._open_upload(conn, upload_id)
            original = self._duplicate(conn, upload, sha256)
            if original is None and key is None:
                return StoredOutcome(upload=upload, duplicate_of=None)  # the original changed: bytes needed
            duplicate_of = original.id if original is not None else None
            stored = dataclasses.replace(
                upload,
                stored_at=now_ms(),
                size=size,
                sha256=sha256,
                path=None if duplicate_of else key,
                duplicate_of=duplicate_of,
                ingest_state=None if duplicate_of else "pending",
                ingest_error=None,
            )
            self._exec(
                conn,
                "UPDATE uploads SET stored_at = ?, size = ?, sha256 = ?, path = ?, duplicate_of = ?,"
                " ingest_state = ?, ingest_error = NULL, ingest_lease = NULL, ingest_tries = 0 WHERE id = ?",
                (stored.stored_at, size, sha256, stored.path, stored.duplicate_of, stored.ingest_state, upload_id),
            )
            if upload.stored_at is not None:  # a replaced profile's summary is out of date
                self._exec(conn, "DELETE FROM summaries WHERE upload_id = ?", (upload_id,))
        return StoredOutcome(upload=stored, duplicate_of=duplicate_of)

    def unmark_stored(self, upload_ids: Sequence[str]) -> int:
        changed = 0
        with self._transaction() as conn:
            for upload_id in upload_ids:
                self._exec(conn, "DELETE FROM summaries WHERE upload_id = ?", (upload_id,))
                changed += self._rowcount(
                    conn,
                    "UPDATE uploads SET stored_at = NULL, size = NULL, sha256 = NULL, path = NULL,"
                    " ingest_state = NULL, ingest_error = NULL, ingest_lease = NULL, ingest_tries = 0 WHERE id = ?",
                    (upload_id,),
                )
        return changed

    def list_profiles(self, session_id: str, kind: UploadKind | None = None) -> list[UploadRecord]:
        if not is_valid_id(session_id, "session"):
            return []
        sql = "SELECT * FROM uploads WHERE session_id = ? AND stored_at IS NOT NULL AND duplicate_of IS NULL"
        params: list[object] = [session_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._query(sql + " ORDER BY created_at, id", params)
        return [_upload_from_row(row) for row in rows]

    def find_batch_profiles(self, session_id: str, dataset_timestamp: int) -> list[UploadRecord]:
        if not is_valid_id(session_id, "session"):
            return []
        rows = self._query(
            "SELECT * FROM uploads WHERE session_id = ? AND kind = 'batch' AND dataset_timestamp = ?"
            " AND stored_at IS NOT NULL AND duplicate_of IS NULL"
            " ORDER BY created_at, id",
            (session_id, dataset_timestamp),
        )
        return [_upload_from_row(row) for row in rows]

    def get_reference(self, session_id: str, reference_id: str) -> UploadRecord | None:
        if not (is_valid_id(session_id, "session") and is_valid_id(reference_id, "ref")):
            return None
        rows = self._query(
            "SELECT * FROM uploads WHERE id = ? AND session_id = ? AND kind = 'reference'"
            " AND stored_at IS NOT NULL AND duplicate_of IS NULL",
            (reference_id, session_id),
        )
        return _upload_from_row(rows[0]) if rows else None

    def duplicates_of(self, upload_ids: Sequence[str]) -> int:
        if not upload_ids:
            return 0
        marks = ", ".join("?" for _ in upload_ids)
        statement = f"SELECT COUNT(*) AS n FROM uploads WHERE duplicate_of IN ({marks})"  # noqa: S608 - placeholders only
        rows = self._query(statement, list(upload_ids))
        return int(rows[0]["n"])

    def unstored_uploads(self, *, session_id: str | None = None, expires_after: int = 0) -> list[UploadRecord]:
        sql = "SELECT * FROM uploads WHERE stored_at IS NULL AND expires_at >= ?"
        params: list[object] = [expires_after]
        if session_id is not None:
            if not is_valid_id(session_id, "session"):
                return []
            sql += " AND session_id = ?"
            params.append(session_id)
        rows = self._query(sql + " ORDER BY created_at, id", params)
        return [_upload_from_row(row) for row in rows]

    def stored_keys(self) -> Iterator[tuple[str, str]]:
        rows = self._query("SELECT id, path FROM uploads WHERE stored_at IS NOT NULL AND path IS NOT NULL")
        return iter([(row["id"], row["path"]) for row in rows])

    # -- ingest ------------------------------------------------------------------------------------

    def claim_ingest(self, *, lease_ms: int, limit: int = 1, max_tries: int = INGEST_MAX_TRIES) -> list[UploadRecord]:
        now = now_ms()
        claimed: list[UploadRecord] = []
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT * FROM uploads WHERE ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?)"
                " ORDER BY stored_at, id LIMIT ?",
                (now, limit),
            )
            for row in rows:
                if self._take(conn, row, now, lease_ms, max_tries):
                    claimed.append(
                        dataclasses.replace(_upload_from_row(row), ingest_tries=int(row["ingest_tries"] or 0) + 1)
                    )
        return claimed

    def _take(self, conn: Any, row: dict[str, Any], now: int, lease_ms: int, max_tries: int) -> bool:
        """Claim the pending profile ``row`` (counting the try), or, when it was tried ``max_tries``
        times already, mark it invalid; whether it was claimed."""
        tries = int(row["ingest_tries"] or 0)
        if tries >= max_tries:
            last = row["ingest_error"] or "the server stopped while summarising it"
            reason = f"summarising it failed {tries} times, so it is not tried again (last time: {last})"
            self._exec(
                conn,
                "UPDATE uploads SET ingest_state = 'invalid', ingest_error = ?, ingest_lease = NULL WHERE id = ?"
                " AND ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?)",
                (reason[:500], row["id"], now),
            )
            return False
        return bool(
            self._rowcount(
                conn,
                "UPDATE uploads SET ingest_lease = ?, ingest_tries = ? WHERE id = ?"
                " AND ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?)",
                (now + lease_ms, tries + 1, row["id"], now),
            )
        )

    def claim_upload_ingest(self, upload_id: str, *, lease_ms: int, max_tries: int = INGEST_MAX_TRIES) -> bool:
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT * FROM uploads WHERE id = ? AND ingest_state = 'pending'"
                " AND (ingest_lease IS NULL OR ingest_lease < ?)",
                (upload_id, now),
            )
            return bool(rows) and self._take(conn, rows[0], now, lease_ms, max_tries)

    def release_ingest_claim(
        self, upload_id: str, sha256: str, *, note: str | None = None, counted: bool = True
    ) -> bool:
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET ingest_lease = NULL, ingest_error = COALESCE(?, ingest_error),"
                " ingest_tries = CASE WHEN ? THEN ingest_tries ELSE ingest_tries - 1 END"
                " WHERE id = ? AND sha256 = ? AND ingest_state = 'pending' AND ingest_tries > 0",
                (None if note is None else note[:400], counted, upload_id, sha256),
            )
        return bool(changed)

    def release_ingest_claims(self) -> int:
        with self._transaction() as conn:
            return self._rowcount(
                conn,
                "UPDATE uploads SET ingest_lease = NULL WHERE ingest_state = 'pending' AND ingest_lease IS NOT NULL",
            )

    def pending_ingest(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM uploads WHERE ingest_state = 'pending'")
        return int(rows[0]["n"])

    def store_summary(self, upload_id: str, sha256: str, data: bytes) -> bool:
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET ingest_state = 'ready', ingest_error = NULL, ingest_lease = NULL"
                " WHERE id = ? AND sha256 = ? AND duplicate_of IS NULL",
                (upload_id, sha256),
            )
            if not changed:
                return False
            self._exec(
                conn,
                "INSERT INTO summaries (upload_id, sha256, data, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (upload_id) DO UPDATE SET sha256 = excluded.sha256, data = excluded.data,"
                " created_at = excluded.created_at",
                (upload_id, sha256, data, now_ms()),
            )
        return True

    def mark_invalid(self, upload_id: str, sha256: str, reason: str) -> bool:
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET ingest_state = 'invalid', ingest_error = ?, ingest_lease = NULL"
                " WHERE id = ? AND sha256 = ?",
                (reason[:500], upload_id, sha256),
            )
        return bool(changed)

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        rows = self._query("SELECT data FROM summaries WHERE upload_id = ? AND sha256 = ?", (upload_id, sha256))
        return bytes(rows[0]["data"]) if rows else None

    # -- derived artefacts -------------------------------------------------------------------------

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        require_id(session_id, "session")
        with self._transaction() as conn:
            self._exec(
                conn,
                "INSERT INTO derived (session_id, key, data, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id, key) DO UPDATE SET data = excluded.data, created_at = excluded.created_at",
                (session_id, key, data, now_ms()),
            )

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        rows = self._query("SELECT data FROM derived WHERE session_id = ? AND key = ?", (session_id, key))
        return bytes(rows[0]["data"]) if rows else None

    def drop_derived(self, session_id: str, prefix: str = "") -> int:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._transaction() as conn:
            return self._rowcount(
                conn,
                "DELETE FROM derived WHERE session_id = ? AND key LIKE ? ESCAPE '\\'",
                (session_id, escaped + "%"),
            )

    # -- counters ----------------------------------------------------------------------------------

    def count(self, operation: str, n: int = 1) -> None:
        self.add_counts({operation: n})

    def add_counts(self, counts: dict[str, int]) -> None:
        with self._transaction() as conn:
            for operation, n in counts.items():
                self._exec(
                    conn,
                    "INSERT INTO counters (name, n) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n",
                    (operation, n),
                )

    def stats(self) -> dict[str, int]:
        counts = dict.fromkeys(OPERATIONS, 0)
        for row in self._query("SELECT name, n FROM counters"):
            counts[row["name"]] = int(row["n"])
        return counts

    def reset_stats(self) -> None:
        with self._transaction() as conn:
            self._exec(conn, "DELETE FROM counters")
