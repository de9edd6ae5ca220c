"""Server metadata in PostgreSQL (psycopg 3 with a connection pool).

Selected with ``--database-url postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (libpq's
``PGPASSWORD`` and ``~/.pgpass`` work too, and keep the password off the command line).

The SQL is the one of every metadata store (``sql.py``), in the ``POSTGRESQL`` dialect; this
module only supplies connections. Each server process keeps a pool; reads run in autocommit
mode (one round trip), writes in a transaction that is committed on success and rolled back on
error. PostgreSQL's row locks and ``READ COMMITTED`` isolation keep several worker processes (and
several hosts) consistent: every write the store makes is a single guarded statement or reads
and writes the same rows inside one transaction.

The schema is created or migrated at start, idempotently, while holding a PostgreSQL advisory
lock, so server processes starting at once migrate it once; a database whose schema is newer than
this server knows is refused with a message that says to upgrade. Indexes that only make pages
faster are built after that, concurrently; among them the alias filter's, which needs the
``pg_trgm`` extension (installed at start when the role may, else the filter goes without it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from whylogs_songbird.server.storage.base import StorageConfigError, StorageUnavailableError
from whylogs_songbird.server.storage.paging import alias_text_index
from whylogs_songbird.server.storage.sql import ONLINE_INDEXES, POSTGRESQL, SCHEMA_VERSION, SqlMetadataStore, index_name

logger = logging.getLogger("whylogs_songbird.server.storage")

#: Key of the advisory lock held while the schema is created or migrated (unique to this server).
MIGRATION_LOCK = 0x736F6E6762697264  # "songbird" in ASCII
#: Key of the advisory lock of the process building :data:`ONLINE_INDEXES` ("songidx!").
INDEX_LOCK = 0x736F6E6769647821
#: Connections each server process keeps at most.
POOL_MAX = 16
#: Seconds a start waits for the database when its URL gives no ``connect_timeout``.
CONNECT_TIMEOUT = 10.0
#: How long a listener waits for a notification before it checks whether it should stop; and
#: after a lost connection, before it connects again (the idle poll of the ingest worker covers
#: the gap).
LISTEN_SECONDS = 10.0


class DatabaseUnavailableError(StorageUnavailableError):
    """PostgreSQL could not be reached or refused the connection (the message never shows a password)."""


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def check_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs naming a database; a clear error otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StorageConfigError(
            f"The database URL must start with postgresql://, got {redacted(url)!r} "
            "(e.g. postgresql://songbird@db.internal:5432/songbird)."
        )
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise StorageConfigError(f"The database URL names no database: {redacted(url)!r}; add /DATABASE.")
    return url


def url_connect_timeout(url: str) -> float | None:
    """The seconds libpq's ``connect_timeout`` parameter gives in ``url``'s query, or None when it gives
    none (or 0 or less: libpq's "wait indefinitely", which a start does not do)."""
    given = parse_qs(urlsplit(url).query).get("connect_timeout")
    if not given:
        return None
    try:
        seconds = float(given[-1])
    except ValueError:
        raise StorageConfigError(
            f"connect_timeout={given[-1]!r} in the database URL is not a number of seconds (e.g. connect_timeout=5)."
        ) from None
    return seconds if seconds > 0 else None


class PostgresMetadataStore(SqlMetadataStore):
    """The metadata store in one PostgreSQL database; thread-safe, one per server process.

    Opening connects (failing fast with a clear error when it cannot) and migrates the schema.
    """

    dialect = POSTGRESQL
    #: Several hosts run on one database: a start leaves their claims and fresh writes alone.
    shared = True
    #: Built concurrently after the migration (see :meth:`_build_online_indexes`).
    online_indexes = ONLINE_INDEXES

    def __init__(
        self, url: str, *, max_size: int = POOL_MAX, connect_timeout: float | None = None, owner: str = ""
    ) -> None:
        """``connect_timeout``: seconds to wait for the database at start, and each connection's own
        limit (whole seconds, at least one); by default the URL's ``connect_timeout``, else
        :data:`CONNECT_TIMEOUT`."""
        from psycopg_pool import ConnectionPool

        self.url = check_url(url)
        self.owner = owner
        if connect_timeout is None:
            connect_timeout = url_connect_timeout(self.url) or CONNECT_TIMEOUT
        #: every connection's options, the pool's and the ingest listener's (libpq counts whole seconds)
        self._connect_options: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, int(connect_timeout))}
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=max(2, max_size),  # the migration holds one connection while using another
            kwargs=self._connect_options,
            open=False,
            name="songbird",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self._pool.close()
            raise DatabaseUnavailableError(
                f"Could not connect to PostgreSQL at {redacted(self.url)} within {connect_timeout:g} s "
                f"({type(exc).__name__}); check the URL, that the database server runs and that it "
                "accepts this user (a password can come from PGPASSWORD or ~/.pgpass)."
            ) from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresMetadataStore({redacted(self.url)!r})"

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        self._pool.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._pool.connection() as conn:
            yield conn

    @functools.cached_property
    def _ingest_channel(self) -> str:
        """The LISTEN/NOTIFY channel of pending ingest work: one per schema, as notifications reach
        every session of the database."""
        with self._read() as conn:
            schema = str(conn.execute("SELECT current_schema()").fetchone()[0])
        return "songbird_ingest_" + hashlib.sha256(schema.encode()).hexdigest()[:16]

    def announce_ingest(self) -> None:
        with self._read() as conn:
            conn.execute("SELECT pg_notify(%s, '')", (self._ingest_channel,))

    def listen_ingest(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(self._ingest_channel, callback, stop), name="songbird-ingest-listen", daemon=True
        )
        thread.start()

        def stop_listening() -> None:
            stop.set()
            with contextlib.suppress(Exception):  # the listener hears it and ends now
                self.announce_ingest()
            thread.join(LISTEN_SECONDS + 1)

        return stop_listening

    def _listen(self, channel: str, callback: Callable[[], None], stop: threading.Event) -> None:
        """Call ``callback`` for each notification on ``channel`` (a connection of its own, blocked
        in the socket between them: no CPU while nothing comes), until ``stop`` is set."""
        import psycopg

        while not stop.is_set():
            try:
                with psycopg.connect(self.url, **self._connect_options) as conn:
                    conn.execute(f'LISTEN "{channel}"')
                    callback()  # what was announced while this listener was not there
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=LISTEN_SECONDS, stop_after=1):
                            callback()
            except Exception as exc:
                if stop.is_set():
                    return
                logger.warning("storage: listening for ingest work failed (%s); trying again", type(exc).__name__)
                stop.wait(LISTEN_SECONDS)

    def schema_version(self) -> int:
        """The schema version recorded in the database (0: none yet)."""
        with self._read() as conn:
            return _recorded_version(conn)

    def _migrate(self) -> None:
        # A session-level advisory lock on a connection of its own, held while the shared schema
        # code runs its transaction on another: processes starting together take turns.
        with self._pool.connection() as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                recorded = _recorded_version(lock_conn)
                if recorded > SCHEMA_VERSION:
                    raise StorageConfigError(
                        f"The database {redacted(self.url)} has schema version {recorded}, newer than this "
                        f"server knows ({SCHEMA_VERSION}); upgrade whylogs-songbird on every server of the team."
                    )
                self._create_schema()
                if recorded != SCHEMA_VERSION:
                    logger.info("PostgreSQL schema at version %d (was %d)", SCHEMA_VERSION, recorded)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            # after the migration lock is given back: a build waits for older transactions to end,
            # and a process waiting for that lock would be one of them
            self._build_online_indexes(lock_conn, upgrade=recorded != 0)

    def _build_online_indexes(self, conn: Any, *, upgrade: bool) -> None:
        """Build the :data:`ONLINE_INDEXES` that are missing, and the alias filter's trigram index
        (:func:`~whylogs_songbird.server.storage.paging.alias_text_index`, see :func:`_create_trigram_extension`),
        with ``CREATE INDEX CONCURRENTLY`` on ``conn`` (autocommit: outside any transaction), so the
        other hosts keep writing to the table while it is read. One process builds (it holds
        :data:`INDEX_LOCK`); a process that finds another one building serves meanwhile without the
        indexes (they only make pages faster). A build cut short (the process died, or PostgreSQL
        refused it) leaves an INVALID index, which no query uses: the next build drops it and builds
        it again. A failure is logged and left to the next start, never fatal."""
        trigram_ops = _trigram_ops(conn)
        statements = _online_statements(trigram_ops)
        names = [index_name(statement) for statement in statements]
        if trigram_ops is not None and all(self._index_states(conn, names).get(name) for name in names):
            return  # every index there and valid: the usual start, without taking the lock
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_LOCK,)).fetchone()[0]:
            logger.info("another process builds the paging indexes; this one serves without waiting for them")
            return
        level = logging.INFO if upgrade else logging.DEBUG
        try:
            if trigram_ops is None:  # now that no other process builds: make the extension, or say why not
                statements = _online_statements(_create_trigram_extension(conn))
                names = [index_name(statement) for statement in statements]
            states = self._index_states(conn, names)  # again, now that no other process builds
            for statement, name in zip(statements, names, strict=True):
                if states.get(name):
                    continue
                try:
                    if name in states:  # INVALID: what a build that did not finish left
                        logger.warning(
                            "storage: index %s was left invalid by a build cut short; building it again", name
                        )
                        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                    logger.log(level, "storage: building index %s concurrently (writes go on meanwhile)", name)
                    conn.execute(
                        statement.replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1)
                    )
                except psycopg_error() as exc:
                    logger.warning(
                        "storage: could not build index %s (%s); pages work without it, the next start builds it again",
                        name,
                        type(exc).__name__,
                    )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))

    @staticmethod
    def _index_states(conn: Any, names: list[str]) -> dict[str, bool]:
        """Whether each of the indexes ``names`` that exists in the current schema is valid."""
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)",
            (names,),
        ).fetchall()
        return {str(name): bool(valid) for name, valid in rows}


def _online_statements(trigram_ops: str | None) -> list[str]:
    """The indexes built concurrently: :data:`ONLINE_INDEXES`, and the alias filter's trigram index
    when ``pg_trgm`` is there (``trigram_ops``: its operator class, with its schema)."""
    return [*ONLINE_INDEXES, *([] if trigram_ops is None else [alias_text_index(trigram_ops)])]


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _trigram_ops(conn: Any) -> str | None:
    """``pg_trgm``'s GIN operator class, named with the schema the extension is installed in (one per
    database, maybe not on this store's search path), or None when the extension is not installed."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
    ).fetchone()
    return None if row is None else f"{_quoted(str(row[0]))}.gin_trgm_ops"


def _create_trigram_extension(conn: Any) -> str | None:
    """Install ``pg_trgm`` (in this store's schema) and return :func:`_trigram_ops`; None, logged,
    when PostgreSQL refuses: a role without the CREATE privilege on the database (it is a trusted
    extension: the database's owner may install it), or a server without the contrib modules. The
    alias filter then works without its index, reading the session's rows."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except psycopg_error() as exc:
        logger.warning(
            "storage: the session page's alias filter has no index: PostgreSQL refused CREATE EXTENSION pg_trgm"
            " (%s); it reads a session's every profile until a database owner runs CREATE EXTENSION pg_trgm"
            " (the next start builds the index)",
            type(exc).__name__,
        )
        return None
    return _trigram_ops(conn)


def psycopg_error() -> type[Exception]:
    """psycopg's base error class (imported when a store is opened, as psycopg is the team extra's)."""
    import psycopg

    return psycopg.Error


def _recorded_version(conn: Any) -> int:
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def open_metadata(url: str, *, owner: str = "") -> PostgresMetadataStore:
    """The factory ``storage.open_storage`` calls for ``--database-url postgresql://...``; ``owner``
    names the host its ingest claims are taken for."""
    return PostgresMetadataStore(url, owner=owner)


__all__ = [
    "CONNECT_TIMEOUT",
    "DatabaseUnavailableError",
    "PostgresMetadataStore",
    "check_url",
    "open_metadata",
    "redacted",
    "url_connect_timeout",
]
