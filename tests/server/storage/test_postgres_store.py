"""The PostgreSQL metadata store's own part (whylogs_songbird/server/storage/postgres.py): URLs and
their redaction, connecting, the pool's settings, reads and transactions, and the migration under
its advisory lock, on a real PostgreSQL (the session's throwaway cluster, tests/services.py).

The SQL every metadata store shares (sql.py) is held by tests/test_store_logic.py; expected
messages are written out here by hand.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable

import psycopg
import pytest
from hang_bound import HANG_SECONDS
from services import free_port

from whylogs_songbird.server.storage import postgres
from whylogs_songbird.server.storage.base import StorageConfigError, StorageUnavailableError
from whylogs_songbird.server.storage.paging import alias_text_index
from whylogs_songbird.server.storage.postgres import (
    INDEX_LOCK,
    MIGRATION_LOCK,
    POOL_MAX,
    DatabaseUnavailableError,
    PostgresMetadataStore,
    _quoted,
    _recorded_version,
    _trigram_ops,
    check_url,
    open_metadata,
    redacted,
    url_connect_timeout,
)
from whylogs_songbird.server.storage.sql import ONLINE_INDEXES, SCHEMA_VERSION

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/postgres.py")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:hunter2@127.0.0.1:5432/db", "postgresql://u:***@127.0.0.1:5432/db"),
        ("postgresql://u:hunter2@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_a_password_is_never_shown(url, shown):
    assert redacted(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/songbird",
        "postgres://u@h/songbird",
        "postgresql://h/?dbname=songbird",
        "postgresql://h?dbname=songbird",
        "postgresql://h/X",
        "postgresql://h/XX/",
    ],
)
def test_urls_naming_a_database_are_accepted_as_given(url):
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://u:hunter2@h/db",
            "The database URL must start with postgresql://, got 'mysql://u:***@h/db' "
            "(e.g. postgresql://songbird@db.internal:5432/songbird).",
        ),
        (
            "postgresql+psycopg://h/db",
            "The database URL must start with postgresql://, got 'postgresql+psycopg://h/db' "
            "(e.g. postgresql://songbird@db.internal:5432/songbird).",
        ),
        (
            "postgresql://u:hunter2@h:5432",
            "The database URL names no database: 'postgresql://u:***@h:5432'; add /DATABASE.",
        ),
        ("postgres://h//", "The database URL names no database: 'postgres://h//'; add /DATABASE."),
        (
            "postgresql://h/?sslmode=require",
            "The database URL names no database: 'postgresql://h/?sslmode=require'; add /DATABASE.",
        ),
    ],
)
def test_other_urls_say_what_to_write(url, message):
    with pytest.raises(StorageConfigError) as caught:
        check_url(url)
    assert str(caught.value) == message


def test_an_unreachable_database_fails_fast_saying_what_to_check():
    url = f"postgresql://songbird:hunter2@127.0.0.1:{free_port()}/songbird"
    with pytest.raises(DatabaseUnavailableError) as caught:
        PostgresMetadataStore(url, connect_timeout=0.2)  # the pool's wait; each try's own is a whole second
    assert isinstance(caught.value, StorageUnavailableError)
    assert str(caught.value) == (
        f"Could not connect to PostgreSQL at {redacted(url)} within 0.2 s (PoolTimeout); check the URL, that the "
        "database server runs and that it accepts this user (a password can come from PGPASSWORD or ~/.pgpass)."
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_urls_connect_timeout_is_the_wait_at_start():
    url = f"postgresql://songbird:hunter2@127.0.0.1:{free_port()}/songbird?connect_timeout=1.5"
    with pytest.raises(DatabaseUnavailableError, match=r"within 1\.5 s \(PoolTimeout\)"):
        PostgresMetadataStore(url)
    # one given to the store wins over the URL's
    with pytest.raises(DatabaseUnavailableError, match=r"within 0\.2 s \(PoolTimeout\)"):
        PostgresMetadataStore(url, connect_timeout=0.2)


@pytest.mark.parametrize(
    ("query", "seconds"),
    [("", None), ("?sslmode=disable", None), ("?connect_timeout=3", 3.0), ("?connect_timeout=0.5", 0.5),
     ("?connect_timeout=0", None), ("?connect_timeout=-2", None), ("?connect_timeout=1&connect_timeout=7", 7.0)],
)  # fmt: skip
def test_url_connect_timeout_reads_libpqs_parameter(query, seconds):
    assert url_connect_timeout(f"postgresql://songbird@db.internal/songbird{query}") == seconds


def test_a_connect_timeout_that_is_not_a_number_is_refused_before_connecting():
    url = "postgresql://songbird:hunter2@127.0.0.1:1/songbird?connect_timeout=soon"
    with pytest.raises(StorageConfigError) as caught:
        PostgresMetadataStore(url)
    assert str(caught.value) == (
        "connect_timeout='soon' in the database URL is not a number of seconds (e.g. connect_timeout=5)."
    )


def test_a_bad_url_is_refused_before_connecting():
    with pytest.raises(StorageConfigError, match="names no database"):
        PostgresMetadataStore("postgresql://127.0.0.1:1", connect_timeout=1)


#: The pool's wait for its first connection in these tests: a store that can never connect (a
#: mutant's connection options, say) fails a test in 2 s instead of the default 10.
QUICK = 2


@pytest.fixture
def store(postgres_service):
    opened = PostgresMetadataStore(postgres_service.new_schema(), connect_timeout=QUICK)
    yield opened
    opened.close()


def test_a_new_database_gets_the_current_schema_and_says_so(postgres_service, caplog):
    url = postgres_service.new_schema()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        first = open_metadata(url, owner="host-a")
    try:
        assert isinstance(first, PostgresMetadataStore) and first.url == url
        assert first.schema_version() == SCHEMA_VERSION
        assert [r.getMessage() for r in caplog.records] == [f"PostgreSQL schema at version {SCHEMA_VERSION} (was 0)"]
        assert first.shared is True and first.owner == "host-a"
    finally:
        first.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        again = open_metadata(url)
    try:
        assert again.schema_version() == SCHEMA_VERSION and again.owner == ""
        assert [r.getMessage() for r in caplog.records] == []  # nothing migrated the second time
    finally:
        again.close()


def test_the_repr_hides_the_password(postgres_service):
    url = postgres_service.new_schema().replace("postgres@", "postgres:hunter2@", 1)
    opened = PostgresMetadataStore(url, connect_timeout=QUICK)  # trust auth: the password is not checked
    try:
        assert repr(opened) == f"PostgresMetadataStore({redacted(url)!r})"
        assert "hunter2" not in repr(opened) and ":***@" in repr(opened)
    finally:
        opened.close()


def test_the_pool_keeps_one_to_sixteen_connections_and_never_fewer_than_two_at_most(postgres_service):
    assert POOL_MAX == 16
    url = postgres_service.new_schema()
    for asked, kept in ((POOL_MAX, 16), (1, 2), (2, 2), (3, 3)):
        opened = PostgresMetadataStore(url, max_size=asked)  # 1: the migration still gets its two
        try:
            assert (opened._pool.min_size, opened._pool.max_size, opened._pool.name) == (1, kept, "songbird")
        finally:
            opened.close()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        default = PostgresMetadataStore(url, connect_timeout=QUICK)
    try:
        assert [str(w.message) for w in warned] == []  # the pool is opened explicitly (psycopg_pool warns otherwise)
        assert default._pool.max_size == POOL_MAX
    finally:
        default.close()


@pytest.mark.parametrize(
    ("given", "query", "sent"),
    [(None, "", "10"), (2.9, "", "2"), (0.2, "", "1"), (None, "connect_timeout=3", "3"), (4, "connect_timeout=3", "4")],
)
def test_connections_time_out_after_whole_seconds_at_least_one(postgres_service, given, query, sent):
    timeout = {} if given is None else {"connect_timeout": given}
    url = postgres_service.new_schema()
    url += ("&" if "?" in url else "?") + query if query else ""
    opened = PostgresMetadataStore(url, **timeout)
    try:
        with opened._read() as conn:
            assert conn.info.get_parameters()["connect_timeout"] == sent
    finally:
        opened.close()


def test_reads_are_autocommit_and_a_failed_transaction_leaves_nothing(store):
    assert store.owner == ""  # claims for no host unless told
    with store._read() as conn:
        assert conn.autocommit is True
        conn.execute("CREATE TABLE scratch (v INTEGER)")
    with store._transaction() as conn:
        conn.execute("INSERT INTO scratch VALUES (1)")
    with pytest.raises(ZeroDivisionError), store._transaction() as conn:
        conn.execute("INSERT INTO scratch VALUES (2)")
        raise ZeroDivisionError
    with store._read() as conn:
        assert [row[0] for row in conn.execute("SELECT v FROM scratch")] == [1]


def test_close_is_idempotent_and_ends_every_connection(postgres_service):
    url = postgres_service.new_database("closing")
    name = url.rsplit("/", 1)[1]
    opened = PostgresMetadataStore(url, connect_timeout=QUICK)
    with psycopg.connect(postgres_service.url(), autocommit=True) as watcher:
        assert _connections(watcher, name, until_zero=False) >= 1
        opened.close()
        opened.close()
        assert _connections(watcher, name) == 0


def _connections(conn: psycopg.Connection, database: str, until_zero: bool = True) -> int:
    """Connections to ``database``; with ``until_zero``, after waiting (a few seconds at most) for
    closed ones to go away."""
    deadline = time.monotonic() + 5
    while True:
        count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]
        if count == 0 or not until_zero or time.monotonic() > deadline:
            return int(count)
        time.sleep(0.05)


def test_a_newer_schema_is_refused_and_the_pool_closed(postgres_service):
    url = postgres_service.new_database("newer")
    name = url.rsplit("/", 1)[1]
    PostgresMetadataStore(url, connect_timeout=QUICK).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StorageConfigError) as caught:
        PostgresMetadataStore(url.replace("postgres@", "postgres:hunter2@", 1))
    assert str(caught.value) == (
        f"The database {redacted(url.replace('postgres@', 'postgres:hunter2@', 1))} has schema version "
        f"{SCHEMA_VERSION + 1}, newer than this server knows ({SCHEMA_VERSION}); upgrade whylogs-songbird on every "
        "server of the team."
    )
    with psycopg.connect(postgres_service.url(), autocommit=True) as watcher:
        assert _connections(watcher, name) == 0
    with psycopg.connect(url, autocommit=True) as conn:  # the advisory lock was given back despite the error
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK,)).fetchone()[0] is True


def test_the_current_schema_is_opened(postgres_service):
    url = postgres_service.new_schema()
    PostgresMetadataStore(url, connect_timeout=QUICK).close()
    with psycopg.connect(url, autocommit=True) as conn:
        assert _recorded_version(conn) == SCHEMA_VERSION
    reopened = PostgresMetadataStore(url, connect_timeout=QUICK)
    reopened.close()


def test_the_recorded_version_is_zero_without_a_meta_table_or_row(postgres_service):
    with psycopg.connect(postgres_service.new_schema(), autocommit=True) as conn:
        assert _recorded_version(conn) == 0
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        assert _recorded_version(conn) == 0
        conn.execute("INSERT INTO meta VALUES ('other', '5')")
        assert _recorded_version(conn) == 0
        conn.execute("INSERT INTO meta VALUES ('schema_version', '7')")
        assert _recorded_version(conn) == 7


def test_the_migration_lock_is_songbird_s_own_and_a_start_waits_for_it(postgres_service):
    assert int.from_bytes(b"songbird", "big") == MIGRATION_LOCK
    url = postgres_service.new_schema()
    opened: list[PostgresMetadataStore] = []
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        starting = threading.Thread(
            target=lambda: opened.append(PostgresMetadataStore(url, connect_timeout=QUICK)), daemon=True
        )
        starting.start()
        deadline = time.monotonic() + 30
        while not _waits_on_advisory_lock(holder):  # the start is blocked on the lock we hold
            assert time.monotonic() < deadline, "the start never asked for the migration lock"
            assert starting.is_alive() and not opened, "the store opened while another process held the migration lock"
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        starting.join(30)
    assert len(opened) == 1
    try:
        assert opened[0].schema_version() == SCHEMA_VERSION
    finally:
        opened[0].close()


def _waits_on_advisory_lock(conn: psycopg.Connection) -> bool:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s AND classid = %s"
    row = conn.execute(query, (MIGRATION_LOCK & 0xFFFFFFFF, MIGRATION_LOCK >> 32)).fetchone()
    return bool(row[0])


# --- the paging indexes, built concurrently after the migration -------------------------------------

ONLINE = ["session_page_by_uploaded", "session_page_by_timestamp", "session_page_by_alias"]
TRIGRAM = "session_page_alias_text"
BUILDING = "storage: building index %s concurrently (writes go on meanwhile)"


class _Recorder:
    """A real connection that remembers each statement it is given (the module's own seam)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.sent: list[str] = []

    def execute(self, statement, *args):
        self.sent.append(statement)
        return self.conn.execute(statement, *args)


def _indexes(conn: psycopg.Connection) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'session_page%%'"
    ).fetchall()
    return dict(rows)


def _index_lock_free(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as other:
        free = other.execute("SELECT pg_try_advisory_lock(%s)", (INDEX_LOCK,)).fetchone()[0]
        if free:
            other.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))
        return bool(free)


def test_a_start_builds_each_paging_index_concurrently_and_a_later_start_asks_for_none(postgres_service, caplog):
    url = postgres_service.new_schema()
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.storage"):
        PostgresMetadataStore(url, connect_timeout=QUICK).close()
    built = [(r.levelno, r.getMessage()) for r in caplog.records if "building index" in r.getMessage()]
    assert built == [(logging.DEBUG, BUILDING % name) for name in [*ONLINE, TRIGRAM]]  # a new database: quietly
    assert _index_lock_free(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert _indexes(conn) == dict.fromkeys([*ONLINE, TRIGRAM], True)
        ops = _trigram_ops(conn)
        assert ops is not None and ops.endswith('".gin_trgm_ops')
        recorder = _Recorder(conn)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore._build_online_indexes(PostgresMetadataStore, recorder, upgrade=True)  # type: ignore[arg-type]
        assert not any("advisory" in sent for sent in recorder.sent)  # all there: no lock asked for
        assert caplog.records == []
        for name in (ONLINE[1], TRIGRAM):
            conn.execute(f"DROP INDEX {name}")
        recorder.sent.clear()
        with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore._build_online_indexes(PostgresMetadataStore, recorder, upgrade=True)  # type: ignore[arg-type]
        creates = [sent for sent in recorder.sent if "INDEX" in sent]
        assert creates == [
            statement.replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS")
            for statement in (ONLINE_INDEXES[1], alias_text_index(ops))
        ]
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.INFO, BUILDING % ONLINE[1]),  # an upgrade: said
            (logging.INFO, BUILDING % TRIGRAM),
        ]
        assert _indexes(conn) == dict.fromkeys([*ONLINE, TRIGRAM], True)
        conn.execute(f"DROP INDEX {ONLINE[0]}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        PostgresMetadataStore(url, connect_timeout=QUICK).close()  # a start on a schema there: an upgrade
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, BUILDING % ONLINE[0])]
    assert _index_lock_free(url)


def test_an_invalid_index_is_dropped_and_built_again_and_a_failed_build_is_logged(postgres_service, caplog):
    url = postgres_service.new_schema()
    PostgresMetadataStore(url, connect_timeout=QUICK).close()
    with psycopg.connect(url, autocommit=True) as conn:
        ops = _trigram_ops(conn)
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (ONLINE[1],))
        conn.execute(f"DROP INDEX {TRIGRAM}")
        recorder = _Recorder(conn)
        with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore._build_online_indexes(PostgresMetadataStore, recorder, upgrade=False)  # type: ignore[arg-type]
        assert [sent for sent in recorder.sent if "INDEX" in sent] == [
            f"DROP INDEX CONCURRENTLY IF EXISTS {ONLINE[1]}",
            ONLINE_INDEXES[1].replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
            alias_text_index(ops).replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        ]
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.WARNING, f"storage: index {ONLINE[1]} was left invalid by a build cut short; building it again"),
            (logging.DEBUG, BUILDING % ONLINE[1]),
            (logging.DEBUG, BUILDING % TRIGRAM),
        ]
        assert _indexes(conn) == dict.fromkeys([*ONLINE, TRIGRAM], True)
        # an index PostgreSQL refuses to build (its column is gone) is logged; the next ones are built
        conn.execute("ALTER TABLE uploads DROP COLUMN dataset_timestamp")  # drops session_page_by_timestamp
        conn.execute(f"DROP INDEX {ONLINE[2]}")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore._build_online_indexes(PostgresMetadataStore, conn, upgrade=True)  # type: ignore[arg-type]
        assert [r.getMessage() for r in caplog.records] == [
            f"storage: could not build index {ONLINE[1]} (UndefinedColumn); pages work without it, the next start "
            "builds it again"
        ]
        assert _indexes(conn) == {ONLINE[0]: True, ONLINE[2]: True, TRIGRAM: True}
    assert _index_lock_free(url)


def test_a_start_that_finds_another_building_serves_without_waiting(postgres_service, caplog):
    url = postgres_service.new_schema()
    PostgresMetadataStore(url, connect_timeout=QUICK).close()
    with psycopg.connect(url, autocommit=True) as holder, psycopg.connect(url, autocommit=True) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", (INDEX_LOCK,))
        conn.execute(f"DROP INDEX {ONLINE[0]}")
        with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore._build_online_indexes(PostgresMetadataStore, conn, upgrade=True)  # type: ignore[arg-type]
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.INFO, "another process builds the paging indexes; this one serves without waiting for them")
        ]
        assert ONLINE[0] not in _indexes(conn)
        holder.execute("SELECT pg_advisory_unlock(%s)", (INDEX_LOCK,))


def test_a_role_that_may_not_install_pg_trgm_serves_without_its_index_until_it_may(postgres_service, caplog):
    url = postgres_service.new_database("trgm")
    role = "plain_" + url.rsplit("_", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE SCHEMA own AUTHORIZATION {role}")
    plain = url.replace("postgres@", f"{role}@", 1) + "?options=-csearch_path%3Down"
    for _ in range(2):  # each start tries again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
            PostgresMetadataStore(plain, connect_timeout=QUICK).close()
        assert [r.getMessage() for r in caplog.records] == [
            "storage: the session page's alias filter has no index: PostgreSQL refused CREATE EXTENSION pg_trgm"
            " (InsufficientPrivilege); it reads a session's every profile until a database owner runs CREATE"
            " EXTENSION pg_trgm (the next start builds the index)"
        ]
        with psycopg.connect(plain, autocommit=True) as conn:
            assert _indexes(conn) == dict.fromkeys(ONLINE, True) and _trigram_ops(conn) is None
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON DATABASE {url.rsplit('/', 1)[1]} TO {role}")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
        PostgresMetadataStore(plain, connect_timeout=QUICK).close()
    assert caplog.records == []
    with psycopg.connect(plain, autocommit=True) as conn:
        assert _trigram_ops(conn) == '"own".gin_trgm_ops'  # installed in the store's schema
        assert _indexes(conn) == dict.fromkeys([*ONLINE, TRIGRAM], True)


def test_identifiers_are_quoted_with_their_quotes_doubled():
    assert _quoted("own") == '"own"'
    assert _quoted('a"b""') == '"a""b"""""'


# --- ingest notifications (LISTEN/NOTIFY) -----------------------------------------------------------


def _schema_of(url: str) -> str:
    return url.rsplit("search_path%3D", 1)[1]


#: Seconds the listener tests wait for what comes at once on loopback (an announcement heard, a
#: connection seen, a listener ended by its stop's announcement): 10, or under scripts/mutation a
#: third of its hang bound, since a mutant that silences the listener otherwise held its slot the
#: whole 10 s.
HEARD_WITHIN = HANG_SECONDS / 3 if HANG_SECONDS else 10.0

#: The listener's connection (by its statement: other tests' listeners share the database).
ACTIVE = "SELECT %s FROM pg_stat_activity WHERE query = %%s"


def _listener_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name == "songbird-ingest-listen"]


def test_each_schema_has_its_channel_and_a_listener_hears_its_announcements_until_stopped(
    postgres_service, caplog, monkeypatch
):
    import queue

    monkeypatch.setattr(postgres, "LISTEN_SECONDS", 0.05)  # its waits: how often it looks at the stop, retries

    url = postgres_service.new_schema()
    first = PostgresMetadataStore(url, connect_timeout=QUICK)
    second = PostgresMetadataStore(url, connect_timeout=QUICK)
    elsewhere = PostgresMetadataStore(postgres_service.new_schema(), connect_timeout=QUICK)
    heard: queue.Queue[str] = queue.Queue()
    before = set(threading.enumerate())
    try:
        digest = hashlib.sha256(_schema_of(url).encode()).hexdigest()
        assert first._ingest_channel == second._ingest_channel == "songbird_ingest_" + digest[:16]
        assert elsewhere._ingest_channel != first._ingest_channel
        stop = first.listen_ingest(lambda: heard.put("called"))
        assert stop is not None
        (listener,) = _listener_threads(before)
        assert listener.daemon
        assert heard.get(timeout=HEARD_WITHIN) == "called"  # at once: what was announced before it listened
        listening = f'LISTEN "{first._ingest_channel}"'
        with psycopg.connect(url, autocommit=True) as watcher:  # listening now
            deadline = time.monotonic() + HEARD_WITHIN
            while not watcher.execute(ACTIVE % "count(*)", (listening,)).fetchone()[0]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        second.announce_ingest()
        assert heard.get(timeout=HEARD_WITHIN) == "called"
        # a lost connection is logged, and the listener tries again after a while
        with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(ACTIVE % "pg_terminate_backend(pid)", (listening,))
            deadline = time.monotonic() + HEARD_WITHIN
            while not caplog.records:
                assert time.monotonic() < deadline, "the lost connection was not logged"
                time.sleep(0.02)
        assert [r.getMessage() for r in caplog.records][:1] == [
            "storage: listening for ingest work failed (OperationalError); trying again"
        ]
        assert heard.get(timeout=HEARD_WITHIN) == "called"  # connected again, and said so
        first.close()  # the stop's own announcement now fails: the listener sees the stop at its next look
        stop()
        assert not listener.is_alive()
    finally:
        for store in (first, second, elsewhere):
            store.close()


def _stop_in_background(stop: Callable[[], None]) -> None:
    """Call a listener's stop without waiting for it here: the test judges the listener thread."""
    threading.Thread(target=stop, name="test-stop-listening", daemon=True).start()


def test_a_stopped_listener_ends_when_the_stop_is_announced_not_at_the_end_of_its_wait(postgres_service, monkeypatch):
    """The stop's own announcement wakes the listener, which looks at the stop after each notification:
    with a ten-minute wait between looks, it still ends at once."""
    import queue

    monkeypatch.setattr(postgres, "LISTEN_SECONDS", 600.0)
    store = PostgresMetadataStore(postgres_service.new_schema(), connect_timeout=QUICK)
    heard: queue.Queue[str] = queue.Queue()
    before = set(threading.enumerate())
    try:
        stop = store.listen_ingest(lambda: heard.put("called"))
        assert stop is not None
        (listener,) = _listener_threads(before)
        assert heard.get(timeout=HEARD_WITHIN) == "called"  # connected and listening
        _stop_in_background(stop)
        listener.join(HEARD_WITHIN)
        assert not listener.is_alive()
    finally:
        store.close()


def test_a_listener_whose_database_stops_answering_gives_up_after_the_connect_timeout(postgres_service, monkeypatch):
    """The listener's connection has the store's connect timeout: against a database that accepts the
    connection and then says nothing, it gives up, and so sees a stop, instead of waiting forever."""
    monkeypatch.setattr(postgres, "LISTEN_SECONDS", 600.0)
    store = PostgresMetadataStore(postgres_service.new_schema(), connect_timeout=1)
    before = set(threading.enumerate())
    try:
        assert store._ingest_channel  # named while the database answers
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(4)
            silent.settimeout(10)
            store.url = f"postgresql://songbird@127.0.0.1:{silent.getsockname()[1]}/songbird"
            stop = store.listen_ingest(lambda: None)
            assert stop is not None
            (listener,) = _listener_threads(before)
            accepted, _ = silent.accept()  # the listener is connecting now, and hears nothing back
            with accepted:
                _stop_in_background(stop)
                listener.join(10)
                assert not listener.is_alive()
    finally:
        store.close()


def test_an_unreachable_database_is_given_up_after_the_connect_timeout_not_the_pools_default():
    """The pool waits as long as the store was told (0.2 s), not its own default of 30 s."""
    import queue

    failed: queue.Queue[Exception] = queue.Queue()

    def connect() -> None:
        try:
            PostgresMetadataStore(f"postgresql://songbird@127.0.0.1:{free_port()}/songbird", connect_timeout=0.2)
        except Exception as exc:
            failed.put(exc)

    threading.Thread(target=connect, name="test-connect", daemon=True).start()
    assert isinstance(failed.get(timeout=10), DatabaseUnavailableError)
