"""The PostgreSQL metadata store's own part (whylogs_songbird/server/storage/postgres.py): URLs and
their redaction, connecting, the pool's settings, reads and transactions, and the migration under
its advisory lock, on a real PostgreSQL (the session's throwaway cluster, tests/services.py).

The SQL every metadata store shares (sql.py) is held by tests/test_store_logic.py; expected
messages are written out here by hand.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from services import free_port

from whylogs_songbird.server.storage.base import StorageConfigError, StorageUnavailableError
from whylogs_songbird.server.storage.postgres import (
    MIGRATION_LOCK,
    POOL_MAX,
    DatabaseUnavailableError,
    PostgresMetadataStore,
    _recorded_version,
    check_url,
    open_metadata,
    redacted,
)
from whylogs_songbird.server.storage.sql import SCHEMA_VERSION

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
        again = PostgresMetadataStore(url, connect_timeout=QUICK)
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
    default = PostgresMetadataStore(url, connect_timeout=QUICK)
    try:
        assert default._pool.max_size == POOL_MAX
    finally:
        default.close()


@pytest.mark.parametrize(("given", "sent"), [(None, "10"), (2.9, "2"), (0.2, "1")])
def test_connections_time_out_after_whole_seconds_at_least_one(postgres_service, given, sent):
    timeout = {} if given is None else {"connect_timeout": given}
    opened = PostgresMetadataStore(postgres_service.new_schema(), **timeout)
    try:
        with opened._read() as conn:
            assert conn.info.get_parameters()["connect_timeout"] == sent
    finally:
        opened.close()


def test_reads_are_autocommit_and_a_failed_transaction_leaves_nothing(store):
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
