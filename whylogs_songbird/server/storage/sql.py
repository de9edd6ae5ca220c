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
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from whylogs_songbird.server.storage.base import (
    GUEST_ORG_ID,
    INGEST_MAX_TRIES,
    OPERATIONS,
    TIMELINE_VERSION_KEY,
    DerivedWrite,
    NewUpload,
    SessionClaimedError,
    SessionRecord,
    SlotLimitError,
    StoredOutcome,
    UnknownUploadError,
    UploadAlreadyStoredError,
    UploadKind,
    UploadRecord,
    is_valid_id,
    new_id,
    new_version,
    now_ms,
    require_id,
)
from whylogs_songbird.server.storage.deletion import DeletionSql
from whylogs_songbird.server.storage.notifications import NOTIFICATIONS_SCHEMA, NotificationQueueSql
from whylogs_songbird.server.storage.paging import BOUNDED_PROFILE_COUNT, NO_BOUND, PAGING_INDEXES, ProfilePagingSql

logger = logging.getLogger("whylogs_songbird.server.storage")

#: Bumped when the schema changes; kept in the ``meta`` table.
SCHEMA_VERSION = 4

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
    # what an org says about a dataset (column schema, metric schema, weights): JSON by key, never derived
    """CREATE TABLE IF NOT EXISTS dataset_settings (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at {BIGINT} NOT NULL,
    PRIMARY KEY (session_id, key)
)""",
    # API keys made by `songbird keys create`: the SHA-256 of the secret only, never the secret
    """CREATE TABLE IF NOT EXISTS api_keys (
    key_id        TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at    {BIGINT} NOT NULL,
    revoked_at    {BIGINT}
)""",
    """CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
    *NOTIFICATIONS_SCHEMA,
)

#: Columns added after the first schema: (table, column, type), added at start when missing.
MIGRATIONS: tuple[tuple[str, str, str], ...] = (
    ("uploads", "ingest_state", "TEXT"),
    ("uploads", "ingest_error", "TEXT"),
    ("uploads", "ingest_lease", "{BIGINT}"),
    ("uploads", "duplicate_of", "TEXT"),
    # which host took the ingest claim (see SqlMetadataStore.owner)
    ("uploads", "ingest_owner", "TEXT"),
    # a row with a dataset id holds an organization's dataset (org_id, dataset_id), not a guest session
    ("sessions", "dataset_id", "TEXT"),
    # deletion (see storage/deletion.py): a tombstone every read treats as gone, and the claim
    # of the process removing what it marked
    ("sessions", "deleted_at", "{BIGINT}"),
    ("sessions", "purge_lease", "{BIGINT}"),
    ("uploads", "deleted_at", "{BIGINT}"),
    ("uploads", "purge_lease", "{BIGINT}"),
    # claims of a profile's summary so far: a profile whose summarising keeps crashing is given up on
    ("uploads", "ingest_tries", "INTEGER"),
    # what a slot takes: NULL one profile, 'zip' a zip of segment profiles (see UploadFormat)
    ("uploads", "format", "TEXT"),
    # how many profiles the last ingest claim held together: a dead claim of several is no
    # profile's fault (see SqlMetadataStore.claim_ingest)
    ("uploads", "ingest_batch", "INTEGER"),
    # a host's short claim to learn a landed presigned PUT, so one host reads and records it (see
    # SqlMetadataStore.claim_landed): when the claim ends (epoch ms) and whose it is
    ("uploads", "learn_lease", "{BIGINT}"),
    ("uploads", "learn_owner", "TEXT"),
)
#: Indexes over migrated columns (created after the migrations).
LATE_INDEXES = (
    # upload slots still waiting for their bytes (presigned PUTs straight to the blob store)
    "CREATE INDEX IF NOT EXISTS uploads_open ON uploads (expires_at) WHERE stored_at IS NULL",
    "CREATE INDEX IF NOT EXISTS uploads_by_ingest ON uploads (ingest_state, stored_at)",
    # a session's open slots, counted against --max-open-slots on every slot request
    "CREATE INDEX IF NOT EXISTS uploads_open_by_session ON uploads (session_id, expires_at) WHERE stored_at IS NULL",
    # one container per dataset of an org; guest sessions (dataset_id NULL) never collide: NULLs are distinct
    "CREATE UNIQUE INDEX IF NOT EXISTS sessions_by_dataset ON sessions (org_id, dataset_id)",
    "CREATE INDEX IF NOT EXISTS sessions_deleted ON sessions (deleted_at) WHERE deleted_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS uploads_deleted ON uploads (deleted_at) WHERE deleted_at IS NOT NULL",
    # the session page's orders (see storage/paging.py)
    *PAGING_INDEXES,
)
#: Indexes a PostgreSQL store builds ``CONCURRENTLY`` after the migration's transaction, so that
#: adding them to a large live table never blocks the other hosts' writes (see ``postgres.py``).
ONLINE_INDEXES = PAGING_INDEXES


_INDEX_STATEMENT = re.compile(r"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS (\w+) ")


def index_name(statement: str) -> str:
    """The name of the index a ``CREATE [UNIQUE] INDEX IF NOT EXISTS name ...`` statement makes."""
    found = _INDEX_STATEMENT.match(statement)
    if found is None:
        raise ValueError(f"not an index statement of the schema: {statement[:60]!r}")
    return found.group(1)


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
    #: Appended to a SELECT to lock its rows until the transaction ends ("": the transaction
    #: already excludes other writers, as SQLite's ``BEGIN IMMEDIATE`` does).
    for_update: str = ""
    #: Like :attr:`for_update`, passing over rows another transaction has locked instead of waiting.
    skip_locked: str = ""
    #: Appended to a SELECT to keep its rows from being deleted (or their key changed) until the
    #: transaction ends, as a foreign key's check does; other such locks and updates go on.
    key_share: str = ""
    #: Appended to a SELECT of a session's row by a writer of several of its derived rows: such
    #: writers, and the deletions that lock or update the row first, take turns (their derived rows
    #: are locked in different orders, so two at once could deadlock); a key-share lock (an upload
    #: slot being added) does not wait for it.
    no_key_update: str = ""
    #: A query with a row when the index named ``?`` exists (in the current schema).
    index_query: str = "SELECT name FROM sqlite_master WHERE type = 'index' AND name = ?"

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
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    key_share=" FOR KEY SHARE",
    no_key_update=" FOR NO KEY UPDATE",
    index_query="SELECT name FROM (SELECT to_regclass(?) AS name) AS found WHERE name IS NOT NULL",
)


def _session_from_row(row: dict[str, Any]) -> SessionRecord:
    return SessionRecord(
        id=row["id"],
        user_id=row["user_id"],
        org_id=row["org_id"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        claimed_org=row["claimed_org"],
        dataset_id=row.get("dataset_id"),
    )


def _tags_json(tags: Sequence[tuple[str, str]]) -> str:
    # UTF-8 as is (escaped, a 4-byte character would take 12); control characters, NUL included, stay escaped
    return json.dumps([{"key": k, "value": v} for k, v in tags], ensure_ascii=False)


def _tags_of(stored: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(tag["key"]), str(tag["value"])) for tag in json.loads(stored))


#: A session's stored (non-duplicate) batch profiles with a dataset timestamp (``?``: the session):
#: the columns of ``uploads_by_session`` first, so that a range of timestamps is one index walk.
_TIMED_BATCHES = (
    "session_id = ? AND kind = 'batch' AND dataset_timestamp IS NOT NULL AND stored_at IS NOT NULL"
    " AND duplicate_of IS NULL AND deleted_at IS NULL"
)
_NOT_INVALID = "(ingest_state IS NULL OR ingest_state <> 'invalid')"
#: A session's batch profiles with a dataset timestamp in [?, ?), oldest first (``uploads_by_session``).
BATCHES_BETWEEN = (
    f"SELECT * FROM uploads WHERE {_TIMED_BATCHES} AND dataset_timestamp >= ? AND dataset_timestamp <= ?"  # noqa: S608
    " ORDER BY created_at, id"
)
#: A day's mark (see ``batch_day_marks``) sums stored times and sizes modulo this prime (no overflow).
_MARK_MODULUS = 1_000_000_007
#: Milliseconds of a day (the buckets of ``batch_day_marks``).
DAY_MS = 86_400_000


def _bucket_of(size: int, offset: int = 0) -> str:
    """SQL of ``floor((dataset_timestamp + offset) / size)`` in both databases (their integer
    division truncates towards zero), without negating the timestamp (no overflow at the ends of
    BIGINT); integers only."""
    shifted = f"(dataset_timestamp + {int(offset)})"
    width = int(size)
    return f"CASE WHEN {shifted} >= 0 THEN {shifted} / {width} ELSE ({shifted} + 1) / {width} - 1 END"


def _modulo(column: str) -> str:
    """SQL of ``column`` modulo :data:`_MARK_MODULUS` (non-negative values), in both databases
    without ``%`` (a placeholder to PostgreSQL's driver)."""
    return f"({column} - ({column} / {_MARK_MODULUS}) * {_MARK_MODULUS})"


#: Bounds of an open-ended range of dataset timestamps (both databases' BIGINT).
_NO_START = -(2**63)
_NO_END = 2**63 - 1


def _upload_from_row(row: dict[str, Any]) -> UploadRecord:
    tags = _tags_of(row["segment_tags"])
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
        ingest_lease=row.get("ingest_lease"),
        ingest_tries=int(row.get("ingest_tries") or 0),
        format=row.get("format"),
        learn_lease=row.get("learn_lease"),
        learn_owner=row.get("learn_owner"),
    )


def _fresh_batch(rows: Sequence[dict[str, Any]], max_bytes: int | None) -> list[dict[str, Any]]:
    """The pending rows a claim takes together: the first ones whose last claim did not die (the
    first such dead claim's profile goes alone, in a claim of its own), of at most ``max_bytes``
    together (at least one)."""
    batch: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        total += int(row["size"] or 0)
        if row["ingest_lease"] is not None or (batch and max_bytes is not None and total > max_bytes):
            break
        batch.append(row)
    return batch


#: Replace a live session's timeline version (params: key, value, now, session), as ``put_derived``
#: would, inside the transaction that records an upload (see ``SqlMetadataStore.mark_stored``).
_REPLACE_VERSION = (
    "INSERT INTO derived (session_id, key, data, created_at) SELECT id, ?, ?, ? FROM sessions"
    " WHERE id = ? AND deleted_at IS NULL"
    " ON CONFLICT (session_id, key) DO UPDATE SET data = excluded.data, created_at = excluded.created_at"
)


def _is_upload_id(value: str) -> bool:
    return is_valid_id(value, "log") or is_valid_id(value, "ref")


#: A derived value stored or replaced (session id, key, data, created at).
_PUT_DERIVED = (
    "INSERT INTO derived (session_id, key, data, created_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (session_id, key) DO UPDATE SET data = excluded.data, created_at = excluded.created_at"
)


def _drop_derived(dialect: str, session_id: str, prefix: str, keep: str | None) -> tuple[str, tuple[str, ...]]:
    """The statement dropping a session's derived values under ``prefix`` (but not under ``keep``)."""

    def pattern(start: str) -> str:
        return start.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    sql = "DELETE FROM derived WHERE session_id = ? AND key LIKE ? ESCAPE '\\'"
    params: tuple[str, ...] = (session_id, pattern(prefix))
    if prefix and dialect == "sqlite" and ord(prefix[-1]) < 0xD7FF:
        # SQLite's LIKE cannot use the (session_id, key) index: without this range it reads every
        # derived row of the session (its rollups too), milliseconds per value a timeline stores.
        # Text compares as UTF-8 bytes here, so the keys starting with prefix are exactly this range.
        sql += " AND key >= ? AND key < ?"
        params += (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
    if keep is not None:
        sql += " AND key NOT LIKE ? ESCAPE '\\'"
        params += (pattern(keep),)
    return sql, params


#: The claims ``release_ingest_claims`` ends: live leases of pending profiles, of one owner or all.
_RELEASABLE = "ingest_state = 'pending' AND ingest_lease > 0 AND (CAST(? AS TEXT) IS NULL OR ingest_owner = ?)"


class SqlMetadataStore(NotificationQueueSql, DeletionSql, ProfilePagingSql):
    """The metadata store over any DB-API connection, in a :class:`Dialect`.

    Subclasses implement :meth:`_transaction` (a connection inside a write transaction, committed
    on exit, rolled back on error) and :meth:`_read` (a connection for reads), then call
    :meth:`_create_schema` once.
    """

    dialect: Dialect = SQLITE
    _upload_row = staticmethod(_upload_from_row)  # for the mixins' rows
    #: One host's file (SQLite): nothing else runs while a server starts on it.
    shared: bool = False
    #: Index statements :meth:`_create_schema` leaves out: the store builds them itself, outside
    #: its transaction (PostgreSQL: :data:`ONLINE_INDEXES`, concurrently).
    online_indexes: tuple[str, ...] = ()
    #: The host this store's claims are taken for (a shared store is built with ``StorageSpec.owner``,
    #: named from the data dir), so a restarting host releases its own dead claims and no one else's.
    owner: str = ""

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
            cursor = conn.cursor()
            try:
                cursor.execute(self.dialect.sql(statement), tuple(params))
                if cursor.description is None:
                    return []
                names = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
            finally:
                cursor.close()
        # made dicts outside the connection (SQLite's is shared under a lock): a large listing, such
        # as a timeline refresh's, holds it only while its rows are fetched, not the uploads waiting
        return [dict(zip(names, row)) for row in rows]

    def _create(self, conn: Any, statement: str) -> None:
        """Run a ``CREATE ... IF NOT EXISTS`` statement of the schema; an index that exists is not
        asked for again: even with IF NOT EXISTS, PostgreSQL would first lock its table against
        writes (and wait for an index being built concurrently), at every start."""
        if _INDEX_STATEMENT.match(statement):
            name = index_name(statement)
            if self._exec(conn, self.dialect.index_query, (name,)):
                return
        self._exec(conn, statement)

    def _create_schema(self) -> None:
        """Create the tables, add columns of later versions, record the schema version (idempotent)."""
        with self._transaction() as conn:
            existed = {table for table, _, _ in MIGRATIONS if self._exec(conn, self.dialect.columns_query, (table,))}
            for statement in SCHEMA:
                self._create(conn, statement)
            for table, column, kind in MIGRATIONS:
                present = {row[next(iter(row))] for row in self._exec(conn, self.dialect.columns_query, (table,))}
                if column not in present:
                    self._exec(conn, f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    # said for a real migration; on a fresh database it is part of creating the table
                    level = logging.INFO if table in existed else logging.DEBUG
                    logger.log(level, "storage: added column %s.%s", table, column)
            for statement in LATE_INDEXES:
                if statement not in self.online_indexes:
                    self._create(conn, statement)
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
        rows = self._query("SELECT * FROM sessions WHERE id = ? AND deleted_at IS NULL", (session_id,))
        return _session_from_row(rows[0]) if rows else None

    def claim(self, session_id: str, org_id: str) -> SessionRecord | None:
        if not is_valid_id(session_id, "session"):
            return None
        with self._transaction() as conn:
            self._exec(
                conn,
                "UPDATE sessions SET claimed_at = ?, claimed_org = ?, org_id = ? WHERE id = ? AND claimed_at IS NULL"
                " AND dataset_id IS NULL AND deleted_at IS NULL",
                (now_ms(), org_id, org_id, session_id),
            )
            rows = self._exec(
                conn, "SELECT * FROM sessions WHERE id = ? AND dataset_id IS NULL AND deleted_at IS NULL", (session_id,)
            )
        return _session_from_row(rows[0]) if rows else None

    def recent_sessions(self, limit: int = 20) -> list[SessionRecord]:
        rows = self._query(
            "SELECT * FROM sessions WHERE dataset_id IS NULL AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
            " LIMIT ?",
            (limit,),
        )
        return [_session_from_row(row) for row in rows]

    def session_count(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM sessions WHERE dataset_id IS NULL AND deleted_at IS NULL")
        return int(rows[0]["n"])

    # -- datasets of organizations -------------------------------------------------------------

    def dataset_container(self, org_id: str, dataset_id: str) -> SessionRecord:
        with self._transaction() as conn:
            self._exec(
                conn,
                "INSERT INTO sessions (id, user_id, org_id, created_at, dataset_id) VALUES (?, '', ?, ?, ?)"
                " ON CONFLICT (org_id, dataset_id) DO NOTHING",
                (new_id("session"), org_id, now_ms(), dataset_id),
            )
            rows = self._exec(
                conn,
                "SELECT * FROM sessions WHERE org_id = ? AND dataset_id = ? AND deleted_at IS NULL",
                (org_id, dataset_id),
            )
        return _session_from_row(rows[0])

    def find_dataset(self, org_id: str, dataset_id: str) -> SessionRecord | None:
        rows = self._query(
            "SELECT * FROM sessions WHERE org_id = ? AND dataset_id = ? AND deleted_at IS NULL", (org_id, dataset_id)
        )
        return _session_from_row(rows[0]) if rows else None

    # -- uploads ---------------------------------------------------------------------------------

    def create_uploads(
        self,
        session_id: str,
        specs: Sequence[NewUpload],
        *,
        ttl_seconds: int,
        max_open: int | None = None,
        max_profiles: int | None = None,
    ) -> list[UploadRecord]:
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
                    format=spec.format,
                )
            )
        limited = max_open is not None or max_profiles is not None
        with self._transaction() as conn:
            self._require_live_session(conn, session_id, exclusive=limited)
            if limited:
                self._check_slot_limits(conn, session_id, len(records), int(created / 1000), max_open, max_profiles)
            for r in records:
                self._exec(
                    conn,
                    "INSERT INTO uploads (id, session_id, kind, dataset_timestamp, alias, segment_tags, created_at,"
                    " expires_at, format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.id,
                        r.session_id,
                        r.kind,
                        r.dataset_timestamp,
                        r.alias,
                        _tags_json(r.segment_tags),
                        r.created_at,
                        r.expires_at,
                        r.format,
                    ),
                )
        return records

    def _check_slot_limits(
        self, conn: Any, session_id: str, new: int, now_s: int, max_open: int | None, max_profiles: int | None
    ) -> None:
        """Raise SlotLimitError when ``new`` more slots would pass a limit (see :meth:`create_uploads`).
        The caller locked the session's row for update (``_require_live_session(exclusive=True)``),
        so two requests for one session count in turn: the count is a statement of its own, which
        PostgreSQL reads after that lock."""
        rows = self._exec(
            conn,
            "SELECT COUNT(*) AS n FROM uploads WHERE session_id = ? AND stored_at IS NULL AND expires_at >= ?",
            (session_id, now_s),
        )
        open_slots = int(rows[0]["n"])
        if max_open is not None and open_slots + new > max_open:
            raise SlotLimitError("open", open_slots, max_open)
        if max_profiles is not None:
            # counted no further than the limit allows (an index walk bounded by it, not by the
            # session's history); exactly only to say how many a refused session holds
            bound = max_profiles + 1
            stored = int(self._exec(conn, BOUNDED_PROFILE_COUNT, (session_id, bound))[0]["n"])
            if stored + open_slots + new > max_profiles:
                if stored >= bound:
                    stored = int(self._exec(conn, BOUNDED_PROFILE_COUNT, (session_id, NO_BOUND))[0]["n"])
                raise SlotLimitError("profiles", stored + open_slots, max_profiles)

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        if not _is_upload_id(upload_id):
            return None
        rows = self._query("SELECT * FROM uploads WHERE id = ? AND deleted_at IS NULL", (upload_id,))
        return _upload_from_row(rows[0]) if rows else None

    def _open_upload(self, conn: Any, upload_id: str) -> UploadRecord:
        if not _is_upload_id(upload_id):
            raise UnknownUploadError(upload_id)
        rows = self._exec(
            conn,
            "SELECT uploads.*, sessions.claimed_at AS session_claimed_at FROM uploads JOIN sessions"
            " ON sessions.id = uploads.session_id WHERE uploads.id = ? AND uploads.deleted_at IS NULL",
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
            " AND id <> ? AND stored_at IS NOT NULL AND duplicate_of IS NULL AND deleted_at IS NULL"
            " ORDER BY stored_at, id",
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

    def mark_stored(
        self,
        upload_id: str,
        *,
        key: str | None,
        size: int,
        sha256: str,
        if_unstored: bool = False,
        invalid: str | None = None,
        segment_tags: tuple[tuple[str, str], ...] = (),
        stored_at: int | None = None,
    ) -> StoredOutcome:
        with self._transaction() as conn:
            upload = self._open_upload(conn, upload_id)
            if if_unstored and upload.stored_at is not None:
                raise UploadAlreadyStoredError(upload_id)
            if segment_tags and not upload.segment_tags:  # the slot named no segment: the profile's header does
                upload = dataclasses.replace(upload, segment_tags=tuple(segment_tags))
            if upload.stored_at is not None and upload.sha256 == sha256 and upload.size == size:
                # these bytes are recorded already (a retried PUT): nothing changes, not the
                # ingest state, not the summary, not stored_at
                return StoredOutcome(upload=upload, duplicate_of=upload.duplicate_of, recorded=False)
            original = self._duplicate(conn, upload, sha256)
            if original is None and key is None:
                return StoredOutcome(upload=upload, recorded=False)  # the original changed: bytes needed
            duplicate_of = original.id if original is not None else None
            stored = dataclasses.replace(
                upload,
                stored_at=now_ms() if stored_at is None else stored_at,
                size=size,
                sha256=sha256,
                path=None if duplicate_of else key,
                duplicate_of=duplicate_of,
                ingest_state=None if duplicate_of else ("invalid" if invalid else "pending"),
                ingest_error=None if duplicate_of else invalid,
            )
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET stored_at = ?, size = ?, sha256 = ?, path = ?, duplicate_of = ?,"
                " ingest_state = ?, ingest_error = ?, ingest_lease = NULL, ingest_tries = 0, segment_tags = ?"
                " WHERE id = ? AND (stored_at IS NULL OR ? = 0)",  # rechecked after another writer's commit
                (
                    stored.stored_at,
                    size,
                    sha256,
                    stored.path,
                    stored.duplicate_of,
                    stored.ingest_state,
                    stored.ingest_error,
                    _tags_json(stored.segment_tags),
                    upload_id,
                    int(if_unstored),
                ),
            )
            if if_unstored and changed == 0:
                raise UploadAlreadyStoredError(upload_id)
            if upload.stored_at is not None:  # a replaced profile's summary is out of date
                self._exec(conn, "DELETE FROM summaries WHERE upload_id = ?", (upload_id,))
            if duplicate_of is None and invalid is None:
                self._exec(conn, _REPLACE_VERSION, (TIMELINE_VERSION_KEY, new_version(), now_ms(), upload.session_id))
        return StoredOutcome(upload=stored, duplicate_of=duplicate_of)

    def mark_refused(self, upload_id: str, *, size: int, reason: str) -> UploadRecord:
        with self._transaction() as conn:
            upload = self._open_upload(conn, upload_id)
            if upload.stored_at is not None:
                raise UploadAlreadyStoredError(upload_id)
            refused = dataclasses.replace(
                upload,
                stored_at=now_ms(),
                size=size,
                sha256=f"unread-{size}",
                path=None,
                duplicate_of=None,
                ingest_state="invalid",
                ingest_error=reason,
            )
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET stored_at = ?, size = ?, sha256 = ?, path = NULL, duplicate_of = NULL,"
                " ingest_state = 'invalid', ingest_error = ?, ingest_lease = NULL WHERE id = ? AND stored_at IS NULL",
                (refused.stored_at, size, refused.sha256, reason, upload_id),
            )
            if changed == 0:
                raise UploadAlreadyStoredError(upload_id)
        return refused

    def unmark_stored(self, upload_ids: Sequence[str], *, keys: Sequence[str] | None = None) -> int:
        if keys is not None and len(keys) != len(upload_ids):
            raise ValueError("give one key per upload id")
        changed = 0
        with self._transaction() as conn:
            for index, upload_id in enumerate(upload_ids):
                # with no key given, "path = path" is true of every stored row (the path is never NULL)
                unmarked = self._rowcount(
                    conn,
                    "UPDATE uploads SET stored_at = NULL, size = NULL, sha256 = NULL, path = NULL,"
                    " ingest_state = NULL, ingest_error = NULL, ingest_lease = NULL, ingest_tries = 0"
                    " WHERE id = ? AND (CAST(? AS TEXT) IS NULL OR path = ?)",
                    (upload_id, None if keys is None else keys[index], None if keys is None else keys[index]),
                )
                if unmarked:
                    self._exec(conn, "DELETE FROM summaries WHERE upload_id = ?", (upload_id,))
                changed += unmarked
        return changed

    def list_profiles(self, session_id: str, kind: UploadKind | None = None) -> list[UploadRecord]:
        if not is_valid_id(session_id, "session"):
            return []
        sql = (
            "SELECT * FROM uploads WHERE session_id = ? AND stored_at IS NOT NULL AND duplicate_of IS NULL"
            " AND deleted_at IS NULL"
        )
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
            " AND stored_at IS NOT NULL AND duplicate_of IS NULL AND deleted_at IS NULL"
            " ORDER BY created_at, id",
            (session_id, dataset_timestamp),
        )
        return [_upload_from_row(row) for row in rows]

    def batch_profiles_between(self, session_id: str, start: int | None, end: int | None) -> list[UploadRecord]:
        if not is_valid_id(session_id, "session") or (end is not None and end <= _NO_START):
            return []
        # the last timestamp taken, inclusive: an open end takes the largest BIGINT too
        last = _NO_END if end is None else min(end - 1, _NO_END)
        rows = self._query(BATCHES_BETWEEN, (session_id, _NO_START if start is None else max(start, _NO_START), last))
        return [_upload_from_row(row) for row in rows]

    def batch_timestamp_span(self, session_id: str) -> tuple[int, int] | None:
        if not is_valid_id(session_id, "session"):
            return None
        ends = []
        for order in ("ASC", "DESC"):  # each an index seek: read no further than the first valid row
            rows = self._query(
                f"SELECT dataset_timestamp FROM uploads WHERE {_TIMED_BATCHES} AND {_NOT_INVALID}"  # noqa: S608
                f" ORDER BY dataset_timestamp {order} LIMIT 1",
                (session_id,),
            )
            if not rows:
                return None
            ends.append(int(rows[0]["dataset_timestamp"]))
        return ends[0], ends[1]

    def batch_segments(self, session_id: str) -> list[tuple[tuple[str, str], ...]]:
        if not is_valid_id(session_id, "session"):
            return []
        rows = self._query(
            f"SELECT DISTINCT segment_tags FROM uploads WHERE {_TIMED_BATCHES} AND {_NOT_INVALID}",  # noqa: S608
            (session_id,),
        )
        return [_tags_of(row["segment_tags"]) for row in rows]

    def batch_bucket_counts(self, session_id: str, size: int, offset: int = 0) -> tuple[int, int]:
        if not is_valid_id(session_id, "session"):
            return 0, 0
        bucket = _bucket_of(size, offset)
        rows = self._query(
            f"SELECT COUNT(DISTINCT {bucket}) AS every,"  # noqa: S608 - integers only
            f" COUNT(DISTINCT CASE WHEN ingest_state = 'pending' THEN NULL ELSE {bucket} END) AS settled"
            f" FROM uploads WHERE {_TIMED_BATCHES} AND {_NOT_INVALID}",
            (session_id,),
        )
        return int(rows[0]["every"]), int(rows[0]["settled"])

    def batch_day_marks(self, session_id: str) -> dict[int, tuple[int, ...]]:
        if not is_valid_id(session_id, "session"):
            return {}
        day = _bucket_of(DAY_MS)
        rows = self._query(
            f"SELECT {day} AS day, COUNT(*) AS n, MAX(stored_at) AS newest,"  # noqa: S608 - integers only
            f" SUM({_modulo('stored_at')}) AS stamps, SUM({_modulo('COALESCE(size, 0)')}) AS sizes,"
            " SUM(CASE WHEN ingest_state = 'pending' THEN 1 ELSE 0 END) AS pending,"
            " SUM(CASE WHEN ingest_state = 'invalid' THEN 1 ELSE 0 END) AS invalid"
            f" FROM uploads WHERE {_TIMED_BATCHES} GROUP BY {day}",
            (session_id,),
        )
        marks = ("n", "newest", "stamps", "sizes", "pending", "invalid")
        return {int(row["day"]): tuple(int(row[name] or 0) for name in marks) for row in rows}

    def batch_timestamps(self, session_id: str) -> list[tuple[int, tuple[tuple[str, str], ...], bool]]:
        if not is_valid_id(session_id, "session"):
            return []
        rows = self._query(
            "SELECT DISTINCT dataset_timestamp, segment_tags,"  # noqa: S608
            " CASE WHEN ingest_state = 'pending' THEN 1 ELSE 0 END AS pending"
            f" FROM uploads WHERE {_TIMED_BATCHES} AND {_NOT_INVALID}",
            (session_id,),
        )
        return [(int(row["dataset_timestamp"]), _tags_of(row["segment_tags"]), bool(row["pending"])) for row in rows]

    def get_reference(self, session_id: str, reference_id: str) -> UploadRecord | None:
        if not (is_valid_id(session_id, "session") and is_valid_id(reference_id, "ref")):
            return None
        rows = self._query(
            "SELECT * FROM uploads WHERE id = ? AND session_id = ? AND kind = 'reference'"
            " AND stored_at IS NOT NULL AND duplicate_of IS NULL AND deleted_at IS NULL",
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
        sql = "SELECT * FROM uploads WHERE stored_at IS NULL AND expires_at >= ? AND deleted_at IS NULL"
        params: list[object] = [expires_after]
        if session_id is not None:
            if not is_valid_id(session_id, "session"):
                return []
            sql += " AND session_id = ?"
            params.append(session_id)
        rows = self._query(sql + " ORDER BY created_at, id", params)
        return [_upload_from_row(row) for row in rows]

    @contextlib.contextmanager
    def free_turn(self) -> Iterator[bool]:
        """Never free without waiting: a database across the network (SQLite's store overrides it)."""
        yield False

    def claim_landed(self, upload_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        ids = [upload_id for upload_id in upload_ids if _is_upload_id(upload_id)]
        if not ids:
            return set()
        now = now_ms()
        marks = ", ".join("?" for _ in ids)
        statement = (
            "UPDATE uploads SET learn_lease = ?, learn_owner = ? WHERE id IN ("  # noqa: S608 - placeholders only
            f"SELECT id FROM uploads WHERE id IN ({marks}) AND stored_at IS NULL AND deleted_at IS NULL"
            f" AND (learn_lease IS NULL OR learn_lease < ?){self.dialect.skip_locked}) RETURNING id"
        )
        with self._transaction() as conn:
            rows = self._exec(conn, statement, (now + lease_ms, self.owner, *ids, now))
        return {row["id"] for row in rows}

    def release_landed(self, upload_ids: Sequence[str]) -> None:
        ids = [upload_id for upload_id in upload_ids if _is_upload_id(upload_id)]
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        with self._transaction() as conn:
            self._exec(
                conn,
                f"UPDATE uploads SET learn_lease = NULL WHERE id IN ({marks}) AND learn_owner = ?"  # noqa: S608 - placeholders only
                " AND learn_lease IS NOT NULL",
                (*ids, self.owner),
            )

    def release_learn_claims(self, *, owner: str | None = None) -> int:
        with self._transaction() as conn:
            return self._rowcount(
                conn,
                # unrecorded slots only (uploads_open): a recorded slot's claim is never looked at again
                "UPDATE uploads SET learn_lease = NULL WHERE stored_at IS NULL AND learn_lease IS NOT NULL"
                " AND (CAST(? AS TEXT) IS NULL OR learn_owner = ?)",
                (owner, owner),
            )

    def expired_slots(self, *, expired_before: int, limit: int) -> list[UploadRecord]:
        rows = self._query(
            "SELECT * FROM uploads WHERE stored_at IS NULL AND expires_at < ? ORDER BY expires_at, id LIMIT ?",
            (expired_before, limit),
        )
        return [_upload_from_row(row) for row in rows]

    def delete_expired_slots(self, upload_ids: Sequence[str], *, expired_before: int) -> int:
        ids = [upload_id for upload_id in upload_ids if _is_upload_id(upload_id)]
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        with self._transaction() as conn:
            return self._rowcount(
                conn,
                f"DELETE FROM uploads WHERE id IN ({marks}) AND stored_at IS NULL AND expires_at < ?",  # noqa: S608 - placeholders only
                [*ids, expired_before],
            )

    def stored_keys(self) -> Iterator[tuple[str, str]]:
        rows = self._query(
            "SELECT id, path FROM uploads WHERE stored_at IS NOT NULL AND path IS NOT NULL AND deleted_at IS NULL"
        )
        return iter([(row["id"], row["path"]) for row in rows])

    def take_turn(self, name: str, interval_ms: int) -> bool:
        now = now_ms()
        with self._transaction() as conn:  # one statement: of processes asking at once, one gets the turn
            taken = self._rowcount(
                conn,
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                " WHERE CAST(meta.value AS {BIGINT}) <= ?",
                (f"turn:{name}", str(now), now - interval_ms),
            )
        return taken == 1

    # -- ingest ------------------------------------------------------------------------------------

    def claim_ingest(
        self, *, lease_ms: int, limit: int = 1, max_tries: int = INGEST_MAX_TRIES, max_bytes: int | None = None
    ) -> list[UploadRecord]:
        now = now_ms()
        claimed: list[UploadRecord] = []
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT * FROM uploads WHERE ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?)"
                " AND deleted_at IS NULL"
                " ORDER BY stored_at, id LIMIT ?",
                (now, limit),
            )
            # a profile whose last claim died goes alone; those given up on are passed by
            while rows and rows[0]["ingest_lease"] is not None:
                row = rows.pop(0)
                if (taken := self._take(conn, row, now, lease_ms, max_tries, together=1)) is not None:
                    claimed.append(taken)
                    break
            if not claimed:
                batch = _fresh_batch(rows, max_bytes)
                # taken in id order, the order every writer of several uploads locks them in (no deadlock
                # with a deletion, see DeletionSql._lock_for_removal); given in the order they were stored
                for row in sorted(batch, key=lambda row: str(row["id"])):
                    if (taken := self._take(conn, row, now, lease_ms, max_tries, together=len(batch))) is not None:
                        claimed.append(taken)
                stored_order = [row["id"] for row in batch]
                claimed.sort(key=lambda upload: stored_order.index(upload.id))
        self.claimed_here.update(upload.id for upload in claimed)
        return claimed

    def _take(
        self, conn: Any, row: dict[str, Any], now: int, lease_ms: int, max_tries: int, *, together: int
    ) -> UploadRecord | None:
        """Claim the pending profile ``row`` along with ``together`` - 1 others (its upload as
        claimed), or None: taken by someone else meanwhile, or given up on. A claim that ended
        without a verdict (its lease ran out, or the host's start ended it) is charged to the
        profile only when the profile was alone in it: a dead claim of several is no one's fault,
        and each of them then goes alone. A profile charged ``max_tries`` times is marked invalid."""
        tries = int(row["ingest_tries"] or 0)
        if row["ingest_lease"] is not None and int(row.get("ingest_batch") or 1) <= 1:
            tries += 1  # its host died (or stalled past the lease) on this profile alone
        if tries >= max_tries:
            last = row["ingest_error"] or "the server stopped while summarising it"
            reason = f"summarising it failed {tries} times, so it is not tried again (last time: {last})"
            self._exec(
                conn,
                "UPDATE uploads SET ingest_state = 'invalid', ingest_error = ?, ingest_lease = NULL, ingest_tries = ?"
                " WHERE id = ? AND ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?)",
                (reason[:500], tries, row["id"], now),
            )
            return None
        taken = self._rowcount(
            conn,
            "UPDATE uploads SET ingest_lease = ?, ingest_tries = ?, ingest_owner = ?, ingest_batch = ? WHERE id = ?"
            " AND ingest_state = 'pending' AND (ingest_lease IS NULL OR ingest_lease < ?) AND deleted_at IS NULL",
            (now + lease_ms, tries, self.owner, together, row["id"], now),
        )
        return dataclasses.replace(_upload_from_row(row), ingest_tries=tries) if taken else None

    def claim_upload_ingest(self, upload_id: str, *, lease_ms: int, max_tries: int = INGEST_MAX_TRIES) -> bool:
        now = now_ms()
        with self._transaction() as conn:
            rows = self._exec(
                conn,
                "SELECT * FROM uploads WHERE id = ? AND ingest_state = 'pending'"
                " AND (ingest_lease IS NULL OR ingest_lease < ?) AND deleted_at IS NULL",
                (upload_id, now),
            )
            taken = bool(rows) and self._take(conn, rows[0], now, lease_ms, max_tries, together=1) is not None
        if taken:
            self.claimed_here.add(upload_id)
        return taken

    def release_ingest_claim(
        self, upload_id: str, sha256: str, *, note: str | None = None, counted: bool = True
    ) -> bool:
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET ingest_lease = NULL, ingest_error = COALESCE(?, ingest_error),"
                " ingest_tries = COALESCE(ingest_tries, 0) + CASE WHEN ? THEN 1 ELSE 0 END"
                " WHERE id = ? AND sha256 = ? AND ingest_state = 'pending' AND ingest_lease IS NOT NULL"
                " AND ingest_owner = ?",
                (None if note is None else note[:400], counted, upload_id, sha256, self.owner),
            )
        self.claimed_here.discard(upload_id)
        return bool(changed)

    def announce_ingest(self) -> None:
        return None  # one host's file: its processes poll (see PostgresMetadataStore)

    def listen_ingest(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        return None

    def renew_ingest_claims(self, upload_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        if not upload_ids:
            return set()
        marks = ", ".join("?" for _ in upload_ids)
        # the rows locked in id order first, as every writer of several uploads does (no deadlock)
        statement = (
            f"UPDATE uploads SET ingest_lease = ? WHERE id IN (SELECT id FROM uploads WHERE id IN ({marks})"  # noqa: S608 - placeholders only
            f" ORDER BY id{self.dialect.for_update}) AND ingest_state = 'pending'"
            " AND ingest_lease IS NOT NULL AND ingest_owner = ? RETURNING id"
        )
        with self._transaction() as conn:
            rows = self._exec(conn, statement, (now_ms() + lease_ms, *upload_ids, self.owner))
        return {row["id"] for row in rows}

    @functools.cached_property
    def claimed_here(self) -> set[str]:
        """Ids of the profiles this process claimed and has not stored a summary or verdict for
        yet: work of a live worker (this one), which a page may wait for; another process's claim
        may belong to a host that died."""
        return set()

    def release_ingest_claims(self, *, owner: str | None = None) -> int:
        with self._transaction() as conn:
            return self._rowcount(
                conn,
                # an ended lease, not none: the next claim knows this one died (see _take); the rows
                # locked in id order first, as every writer of several uploads does (no deadlock), and
                # checked again once locked (another host may have taken one over meanwhile)
                f"UPDATE uploads SET ingest_lease = 0 WHERE id IN (SELECT id FROM uploads WHERE {_RELEASABLE}"  # noqa: S608 - constants
                f" ORDER BY id{self.dialect.for_update}) AND {_RELEASABLE}",
                (owner, owner, owner, owner),
            )

    def pending_ingest(self) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM uploads WHERE ingest_state = 'pending' AND deleted_at IS NULL")
        return int(rows[0]["n"])

    def store_summary(self, upload_id: str, sha256: str, data: bytes) -> bool:
        return self.store_summaries([(upload_id, sha256, data)])[0]

    def store_summaries(self, summaries: Sequence[tuple[str, str, bytes]]) -> list[bool]:
        """Each summary is kept only while its upload is there, not marked deleted, with the same
        bytes: the UPDATE of the upload's row (which locks it) decides, before the summary is
        inserted. The rows are written in id order, the order a removal locks them in (see
        ``DeletionSql._lock_for_removal``), so an ingest and a removal never deadlock."""
        stored = [False] * len(summaries)
        with self._transaction() as conn:
            for index in sorted(range(len(summaries)), key=lambda i: summaries[i][0]):
                upload_id, sha256, data = summaries[index]
                changed = self._rowcount(
                    conn,
                    "UPDATE uploads SET ingest_state = 'ready', ingest_error = NULL, ingest_lease = NULL"
                    " WHERE id = ? AND sha256 = ? AND duplicate_of IS NULL AND deleted_at IS NULL",
                    (upload_id, sha256),
                )
                self.claimed_here.discard(upload_id)
                if changed:
                    self._exec(
                        conn,
                        "INSERT INTO summaries (upload_id, sha256, data, created_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (upload_id) DO UPDATE SET sha256 = excluded.sha256, data = excluded.data,"
                        " created_at = excluded.created_at",
                        (upload_id, sha256, data, now_ms()),
                    )
                stored[index] = bool(changed)
        return stored

    def mark_invalid(self, upload_id: str, sha256: str, reason: str) -> bool:
        with self._transaction() as conn:
            changed = self._rowcount(
                conn,
                "UPDATE uploads SET ingest_state = 'invalid', ingest_error = ?, ingest_lease = NULL"
                " WHERE id = ? AND sha256 = ?",
                (reason[:500], upload_id, sha256),
            )
        self.claimed_here.discard(upload_id)
        return bool(changed)

    def get_summary(self, upload_id: str, sha256: str) -> bytes | None:
        rows = self._query("SELECT data FROM summaries WHERE upload_id = ? AND sha256 = ?", (upload_id, sha256))
        return bytes(rows[0]["data"]) if rows else None

    # -- derived artefacts -------------------------------------------------------------------------

    def put_derived(self, session_id: str, key: str, data: bytes) -> None:
        require_id(session_id, "session")
        with self._transaction() as conn:
            if not self._live_session(conn, session_id):
                return  # deleted (or being deleted): nothing derived from it is kept
            self._exec(conn, _PUT_DERIVED, (session_id, key, data, now_ms()))

    def get_derived(self, session_id: str, key: str) -> bytes | None:
        rows = self._query("SELECT data FROM derived WHERE session_id = ? AND key = ?", (session_id, key))
        return bytes(rows[0]["data"]) if rows else None

    def drop_derived(self, session_id: str, prefix: str = "", keep: str | None = None) -> int:
        sql, params = _drop_derived(self.dialect.name, session_id, prefix, keep)
        with self._transaction() as conn:
            return self._rowcount(conn, sql, params)

    def write_derived(self, session_id: str, writes: Sequence[DerivedWrite]) -> None:
        require_id(session_id, "session")
        with self._transaction() as conn:
            # deleted: nothing derived from it is kept; and a deletion of the session (or another
            # writer of its derived rows) waits for this transaction, or this one for it
            statement = "SELECT id FROM sessions WHERE id = ? AND deleted_at IS NULL" + self.dialect.no_key_update  # noqa: S608 - a constant
            live = bool(self._exec(conn, statement, (session_id,)))
            for write in writes:
                if write[0] == "put":
                    if live:
                        self._exec(conn, _PUT_DERIVED, (session_id, write[1], write[2], now_ms()))
                else:
                    sql, params = _drop_derived(self.dialect.name, session_id, write[1], write[2])
                    self._exec(conn, sql, params)

    # -- transactions of datasets: their uploads move into the dataset at commit ---------------------

    def move_stored_uploads(self, from_session: str, to_session: str) -> list[str]:
        require_id(from_session, "session")
        require_id(to_session, "session")
        with self._transaction() as conn:
            self._require_live_session(conn, to_session)
            # the rows locked in id order first, as every writer of several uploads does (an ingest
            # writing two of them meanwhile and this update, in the order it finds them, deadlocked)
            rows = self._exec(
                conn,
                "SELECT id FROM uploads WHERE session_id = ? AND stored_at IS NOT NULL ORDER BY id"  # noqa: S608 - a constant
                + self.dialect.for_update,
                (from_session,),
            )
            self._exec(
                conn,
                "UPDATE uploads SET session_id = ? WHERE session_id = ? AND stored_at IS NOT NULL",
                (to_session, from_session),
            )
        return [str(row["id"]) for row in rows]

    def delete_uploads(self, session_id: str) -> list[str]:
        require_id(session_id, "session")
        with self._transaction() as conn:
            self._lock_for_removal(conn, session_id=session_id)  # an ingest in flight commits first, or stores nothing
            rows = self._exec(conn, "SELECT path FROM uploads WHERE session_id = ? AND path IS NOT NULL", (session_id,))
            self._exec(
                conn,
                "DELETE FROM summaries WHERE upload_id IN (SELECT id FROM uploads WHERE session_id = ?)",
                (session_id,),
            )
            self._exec(conn, "DELETE FROM uploads WHERE session_id = ?", (session_id,))
        return [str(row["path"]) for row in rows]

    # -- API keys ------------------------------------------------------------------------------------

    def add_api_key(self, key_id: str, org_id: str, secret_sha256: str) -> None:
        with self._transaction() as conn:
            self._exec(
                conn,
                "INSERT INTO api_keys (key_id, org_id, secret_sha256, created_at) VALUES (?, ?, ?, ?)",
                (key_id, org_id, secret_sha256, now_ms()),
            )

    def find_api_key(self, key_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        return rows[0] if rows else None

    def list_api_keys(self) -> list[dict[str, Any]]:
        return self._query("SELECT key_id, org_id, created_at, revoked_at FROM api_keys ORDER BY created_at, key_id")

    def revoke_api_key(self, key_id: str) -> bool:
        with self._transaction() as conn:
            return bool(
                self._rowcount(
                    conn,
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                    (now_ms(), key_id),
                )
            )

    # -- settings of datasets ----------------------------------------------------------------------

    def put_setting(self, session_id: str, key: str, value: str) -> None:
        require_id(session_id, "session")
        with self._transaction() as conn:
            self._require_live_session(conn, session_id)
            self._exec(
                conn,
                "INSERT INTO dataset_settings (session_id, key, value, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (session_id, key, value, now_ms()),
            )

    def get_setting(self, session_id: str, key: str) -> str | None:
        rows = self._query("SELECT value FROM dataset_settings WHERE session_id = ? AND key = ?", (session_id, key))
        return str(rows[0]["value"]) if rows else None

    def list_settings(self, session_id: str, prefix: str = "") -> list[tuple[str, str]]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(
            "SELECT key, value FROM dataset_settings WHERE session_id = ? AND key LIKE ? ESCAPE '\\' ORDER BY key",
            (session_id, escaped + "%"),
        )
        return [(str(row["key"]), str(row["value"])) for row in rows]

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
