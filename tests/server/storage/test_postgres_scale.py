"""PostgreSQL with much history: the session quota and the session page's counts are counted no
further than their bounds, and the paging indexes of schema v4 are built without blocking writes
(CONCURRENTLY, outside a transaction, a leftover of a failed build rebuilt), on a real PostgreSQL
(tests/support/services.py)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from query_plans import index_walks
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.quotas import check_session_quota, create_slots
from whylogs_songbird.server.storage.base import NewUpload
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.paging import BOUNDED_KIND_COUNTS, BOUNDED_PROFILE_COUNT
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store

TS = 1_700_000_000_000


def batch(n: int, start: int = 0) -> list[NewUpload]:
    return [NewUpload("batch", dataset_timestamp=TS + start + i) for i in range(n)]


@pytest.fixture
def url(postgres_service):
    return postgres_service.new_schema()


@pytest.fixture
def team(url, tmp_path):
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url), blobs=FileBlobStore(tmp_path / "data"))
    yield store
    store.close()


def test_the_session_quota_at_n_and_n_plus_one_on_postgresql(team):
    session_id = team.create_session("u").id
    stored = team.create_uploads(session_id, batch(5), ttl_seconds=900)
    for i, upload in enumerate(stored):
        store_profile_bytes(team, upload.id, bytes([65 + i]) * 3)
    repeat = team.create_uploads(session_id, batch(1), ttl_seconds=900)[0]  # same timestamp and bytes as the first
    assert store_profile_bytes(team, repeat.id, b"AAA").duplicate_of == stored[0].id  # a duplicate: not counted
    at_limit = ServerConfig(max_session_profiles=7, max_open_slots=None)
    assert len(create_slots(team, at_limit, session_id, batch(2, start=10))) == 2  # 5 stored + 2 open = N
    with pytest.raises(ApiError) as refused:
        create_slots(team, at_limit, session_id, batch(1, start=20))  # N + 1
    assert refused.value.status == 403
    assert f"Session {session_id} holds 7 profiles and open upload slots and this server allows 7" in (
        refused.value.message
    )
    # a session already past a (lowered) limit is told exactly how much it holds
    with pytest.raises(ApiError, match="holds 7 profiles and open upload slots and this server allows 3"):
        create_slots(team, ServerConfig(max_session_profiles=3, max_open_slots=None), session_id, batch(1, start=30))
    # at PUT time the open slots do not count: 5 held + 2 new = N, + 3 is past it
    check_session_quota(team, at_limit, session_id, new_profiles=2)
    with pytest.raises(ApiError, match="holds 5 profiles and this server allows 7"):
        check_session_quota(team, at_limit, session_id, new_profiles=3)
    with pytest.raises(ApiError, match="holds 5 profiles and this server allows 2"):
        check_session_quota(team, ServerConfig(max_session_profiles=2), session_id, new_profiles=1)
    check_session_quota(
        team, ServerConfig(max_session_profiles=5), session_id, new_profiles=1, replacing=team.get_upload(stored[0].id)
    )
    with pytest.raises(ApiError, match="holds 15 bytes of profiles; 1 more"):
        check_session_quota(team, ServerConfig(max_session_bytes=15), session_id, new_profiles=1, new_bytes=1)
    check_session_quota(
        team, ServerConfig(max_session_bytes=15), session_id, new_bytes=3, replacing=team.get_upload(stored[1].id)
    )


def test_the_quota_count_walks_no_further_than_its_bound(team, url):
    session_id = team.create_session("u").id
    for i, upload in enumerate(team.create_uploads(session_id, batch(30), ttl_seconds=900)):
        store_profile_bytes(team, upload.id, bytes([i]))
    assert team.count_profiles(session_id) == 30 and team.count_profiles(session_id, at_most=4) == 4
    walked, plan = index_walks(url, BOUNDED_PROFILE_COUNT, (session_id, 4))
    assert [(name.startswith("session_page_by_"), rows) for name, rows in walked] == [(True, 4)], (
        plan
    )  # one paging index, 4 entries read of the session's 30


def test_the_pages_counts_walk_no_further_than_their_bound(team, url):
    session_id = team.create_session("u").id
    uploads = team.create_uploads(session_id, [*batch(30), NewUpload("reference", alias="r")], ttl_seconds=900)
    for i, upload in enumerate(uploads):
        store_profile_bytes(team, upload.id, bytes([i]))
    assert team.profile_counts(session_id) == {"batch": 30, "reference": 1}
    assert team.profile_counts(session_id, at_most=4) == {"batch": 4, "reference": 1}
    walked, plan = index_walks(url, BOUNDED_KIND_COUNTS, (session_id, 4, session_id, 4), analyze=True)
    assert sorted(walked) == [("session_page_by_alias", 1), ("session_page_by_alias", 4)], (
        plan
    )  # each kind from its first entry in the index: 4 batches read of 30, and the one reference


PAGING = ("session_page_by_alias", "session_page_by_timestamp", "session_page_by_uploaded")


def index_states(conn: psycopg.Connection) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'session_page_by_%'"
    ).fetchall()
    return dict(rows)


def waiting_query(conn: psycopg.Connection, prefix: str) -> bool:
    """Whether a statement starting with ``prefix`` is waiting for a lock (in this database)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (prefix + "%",),
    ).fetchone()
    return bool(row[0])


def two_uploads(url: str) -> list[str]:
    metadata = PostgresMetadataStore(url)
    try:
        session_id = metadata.create_session("u").id
        return [upload.id for upload in metadata.create_uploads(session_id, batch(2), ttl_seconds=900)]
    finally:
        metadata.close()


@pytest.fixture
def open_in_thread():
    """Open a PostgresMetadataStore in a thread (as a starting host does); closed at the end."""
    opened: list[PostgresMetadataStore] = []
    threads: list[threading.Thread] = []

    def start(url: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: opened.append(PostgresMetadataStore(url)), daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start, opened
    for thread in threads:
        thread.join(60)
    for store in opened:
        store.close()


def test_an_upgrade_builds_the_paging_indexes_while_other_hosts_keep_writing(url, open_in_thread, caplog):
    start, opened = open_in_thread
    ids = two_uploads(url)
    with psycopg.connect(url, autocommit=True) as admin:
        for name in PAGING:  # the database as schema v3 left it
            admin.execute(f"DROP INDEX {name}")
        admin.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    with psycopg.connect(url) as writing, psycopg.connect(url, autocommit=True) as other:
        writing.execute("UPDATE uploads SET alias = 'a' WHERE id = %s", (ids[0],))  # a host's write in flight
        with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
            upgrading = start(url)
            deadline = time.monotonic() + 30
            while not waiting_query(other, "CREATE INDEX"):  # the build waits for the write in flight
                assert time.monotonic() < deadline and upgrading.is_alive(), "the build never waited"
                time.sleep(0.05)
            # meanwhile another host's write goes through at once (a plain CREATE INDEX would queue it)
            other.execute("SET lock_timeout = '5s'")
            other.execute("UPDATE uploads SET alias = 'b' WHERE id = %s", (ids[1],))
            assert upgrading.is_alive()
            writing.commit()
            upgrading.join(60)
        assert index_states(other) == dict.fromkeys(PAGING, True)
    assert opened and opened[0].schema_version() == 4
    assert [r.getMessage() for r in caplog.records if "building index" in r.getMessage()] == [
        f"storage: building index {name} concurrently (writes go on meanwhile)"
        for name in ("session_page_by_uploaded", "session_page_by_timestamp", "session_page_by_alias")
    ]


def test_an_invalid_index_left_by_a_build_cut_short_is_built_again(url, caplog):
    two_uploads(url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP INDEX session_page_by_uploaded")
        with pytest.raises(psycopg.errors.UniqueViolation):  # a concurrent build that failed half-way
            admin.execute("CREATE UNIQUE INDEX CONCURRENTLY session_page_by_uploaded ON uploads (session_id)")
        assert index_states(admin)["session_page_by_uploaded"] is False
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server.storage"):
        PostgresMetadataStore(url).close()
    assert [r.getMessage() for r in caplog.records] == [
        "storage: index session_page_by_uploaded was left invalid by a build cut short; building it again"
    ]
    with psycopg.connect(url, autocommit=True) as admin:
        assert index_states(admin) == dict.fromkeys(PAGING, True)
        [definition] = admin.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
            ("session_page_by_uploaded",),
        ).fetchone()
    assert "(session_id, stored_at, id) WHERE" in definition and "UNIQUE" not in definition


def test_a_start_with_every_index_built_waits_for_no_write_in_flight(url, open_in_thread):
    start, opened = open_in_thread
    ids = two_uploads(url)
    with psycopg.connect(url) as writing:
        writing.execute("UPDATE uploads SET alias = 'a' WHERE id = %s", (ids[0],))  # held until the end
        start(url).join(30)
        assert len(opened) == 1, "the start waited for another host's write to end"
