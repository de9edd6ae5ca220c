"""Server metadata in PostgreSQL (psycopg 3 with a connection pool).

Selected with ``--database-url postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (libpq's
``PGPASSWORD`` and ``~/.pgpass`` work too, and keep the password off the command line).

The SQL the metadata store runs is written once, in the SQLite dialect with ``?`` placeholders;
:class:`PostgresDatabase` is the small adapter that runs it here: it turns ``?`` into psycopg's
``%s``, hands out rows that read by name and by position like ``sqlite3.Row``, and runs each
transaction on a pooled connection. Tables keep a ``rowid`` identity column, so "insertion
order" sorts the same on both databases.

The schema is created or migrated at start, idempotently: migrations are numbered, the applied
ones are recorded in ``schema_version``, and a transaction-scoped advisory lock lets several
server processes start at once without racing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("whylogs_songbird.server.storage")

#: Key of the advisory lock held while migrating (any constant unique to this application).
_MIGRATION_LOCK = 0x50_4E_47_42_49_52_44  # "SONGBIRD"-ish, fits a bigint

#: The schema, one entry per version; a later change appends a migration, never edits one.
MIGRATIONS: tuple[str, ...] = (
    # 1: sessions, uploads (a profile once stored_at is set), per-operation counters.
    """
    CREATE TABLE IF NOT EXISTS sessions (
        rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id          TEXT PRIMARY KEY,
        user_id     TEXT NOT NULL,
        org_id      TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        claimed_at  BIGINT,
        claimed_org TEXT
    );
    CREATE TABLE IF NOT EXISTS uploads (
        rowid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id                TEXT PRIMARY KEY,
        session_id        TEXT NOT NULL REFERENCES sessions(id),
        kind              TEXT NOT NULL CHECK (kind IN ('batch', 'reference')),
        dataset_timestamp BIGINT,
        alias             TEXT,
        segment_tags      TEXT NOT NULL DEFAULT '[]',
        created_at        BIGINT NOT NULL,
        expires_at        BIGINT NOT NULL,
        stored_at         BIGINT,
        size              BIGINT,
        sha256            TEXT,
        path              TEXT
    );
    CREATE INDEX IF NOT EXISTS uploads_by_session ON uploads (session_id, kind, dataset_timestamp);
    CREATE INDEX IF NOT EXISTS sessions_by_created ON sessions (created_at);
    CREATE TABLE IF NOT EXISTS counters (
        operation TEXT PRIMARY KEY,
        count     BIGINT NOT NULL DEFAULT 0
    );
    """,
)


class DatabaseConfigError(ValueError):
    """The ``--database-url`` is not a PostgreSQL URL this server can use."""


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached or refused the connection (never shows a password)."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def check_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs; a clear error for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise DatabaseConfigError(
            f"database URL must start with postgresql://, got {redacted(url)!r} "
            "(e.g. postgresql://songbird@db.internal:5432/songbird)"
        )
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise DatabaseConfigError(f"database URL names no database: {redacted(url)!r} (add /DATABASE)")
    return url


def to_pyformat(sql: str) -> str:
    """SQLite-style SQL with ``?`` placeholders → psycopg's ``%s`` (``%`` escaped, literals kept)."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
            out.append("%%" if char == "%" else char)
        elif char in ("'", '"'):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    if quote is not None:
        raise ValueError("unterminated quote in SQL")
    return "".join(out)


class Row(tuple):
    """A result row readable by column name and by position, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Any:
    description = cursor.description or []
    index = {column.name: i for i, column in enumerate(description)}

    def make(values: Sequence[Any]) -> Row:
        return Row(values, index)

    return make


class Connection:
    """One transaction's connection, with the ``execute(sql, params)`` shape of ``sqlite3``."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        """Run one statement; the returned cursor has ``fetchone``/``fetchall`` and ``rowcount``."""
        cursor = self._conn.cursor(row_factory=_row_factory)
        cursor.execute(to_pyformat(sql), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> Any:
        cursor = self._conn.cursor(row_factory=_row_factory)
        cursor.executemany(to_pyformat(sql), [tuple(row) for row in rows])
        return cursor


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database; thread-safe, one per server process.

    Opening connects (failing fast with a clear error) and migrates the schema.
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 16,
        connect_timeout: float = 10.0,
        migrations: Sequence[str] = MIGRATIONS,
    ) -> None:
        from psycopg_pool import ConnectionPool

        self.url = check_url(url)
        self._pool = ConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": False, "connect_timeout": max(1, int(connect_timeout))},
            open=False,
            name="songbird",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self._pool.close()
            raise DatabaseUnavailableError(
                f"Could not connect to PostgreSQL at {redacted(self.url)} within {connect_timeout:g} s "
                f"({type(exc).__name__}); check the URL, that the server runs and that it accepts this user."
            ) from None
        try:
            self.migrate(migrations)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresDatabase({redacted(self.url)!r})"

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        self._pool.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self._pool.connection() as conn, conn.transaction():
            yield Connection(conn)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one read-only statement and return its rows."""
        with self.transaction() as conn:
            return list(conn.execute(sql, params).fetchall())

    def schema_version(self) -> int:
        """The newest migration applied (0: none)."""
        rows = self.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    def migrate(self, migrations: Sequence[str]) -> int:
        """Apply the migrations not applied yet, in order, under an advisory lock; return the version."""
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            if current > len(migrations):
                raise DatabaseConfigError(
                    f"The database {redacted(self.url)} has schema version {current}, newer than this server "
                    f"knows ({len(migrations)}); upgrade whylogs-songbird on every server of the team."
                )
            for version in range(current + 1, len(migrations) + 1):
                conn._conn.execute(migrations[version - 1])
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                logger.info("database schema migrated to version %d", version)
        return len(migrations)
