"""The store's reads of a session's batches by dataset timestamp, which the timeline uses so that a
ranged view, or one refused as too large, does not list the whole session: a range of timestamps,
the first and last timestamps, the distinct segments and the distinct (timestamp, segment, pending)
triples, on the real SQLite and PostgreSQL metadata stores (tests/support/services.py)."""

from __future__ import annotations

import sqlite3

import pytest
from query_plans import index_walks
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.storage.base import NewUpload
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.storage.sql import BATCHES_BETWEEN
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import Store
from whylogs_songbird.timeline import bucket_bounds

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
EAST = (("region", "east"),)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str | None:
    """The PostgreSQL URL of a fresh schema, or None for SQLite."""
    return request.getfixturevalue("postgres_service").new_schema() if request.param == "postgres" else None


@pytest.fixture
def store(database, tmp_path):
    if database is None:
        metadata = SqliteMetadataStore(tmp_path / "data" / "songbird.db")
    else:
        metadata = PostgresMetadataStore(database)
    opened = Store(tmp_path / "data", metadata=metadata, blobs=FileBlobStore(tmp_path / "data"))
    yield opened
    opened.close()


def put(store: Store, session_id: str, *uploads: NewUpload) -> list[str]:
    ids = []
    for upload in store.create_uploads(session_id, list(uploads), ttl_seconds=900):
        stored = store_profile_bytes(store, upload.id, upload.id.encode())
        store.metadata.store_summary(stored.id, stored.sha256 or "", b"{}")  # summarised: not pending
        ids.append(stored.id)
    return ids


def test_a_session_s_batches_are_read_by_range_span_segments_and_timestamps(store):
    session_id = store.create_session("u").id
    other = store.create_session("u").id
    hourly = put(store, session_id, *(NewUpload("batch", dataset_timestamp=T0 + i * HOUR) for i in range(6)))
    east = put(store, session_id, NewUpload("batch", dataset_timestamp=T0 + 2 * HOUR + 5, segment_tags=EAST))[0]
    put(store, session_id, NewUpload("reference", dataset_timestamp=T0 - 9 * HOUR, alias="base"))
    put(store, session_id, NewUpload("batch"))  # no dataset timestamp: on no timeline
    put(store, other, NewUpload("batch", dataset_timestamp=T0 - 99 * HOUR))
    bad = put(store, session_id, NewUpload("batch", dataset_timestamp=T0 + 50 * HOUR))[0]
    store.metadata.mark_invalid(bad, store.get_upload(bad).sha256, "not a profile")
    late = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=T0 - 7 * HOUR)], ttl_seconds=900)
    pending = store_profile_bytes(store, late[0].id, b"late").id  # stored, not summarised yet

    def between(start, end):
        found = store.batch_profiles_between(session_id, start, end)
        assert found == sorted(found, key=lambda u: (u.created_at, u.id))  # oldest first, as list_profiles
        return {u.id for u in found}

    assert between(T0 + HOUR, T0 + 3 * HOUR) == {hourly[1], hourly[2], east}  # [start, end)
    assert between(T0 + 5 * HOUR, None) == {hourly[5], bad}  # the store's record: the caller drops invalid ones
    assert between(None, T0 + 1) == {hourly[0], pending}
    assert between(T0 + 6 * HOUR, T0 + 50 * HOUR) == set() and between(None, None) == {*hourly, east, bad, pending}
    assert store.batch_profiles_between("session-nope", None, None) == []

    assert store.batch_timestamp_span(session_id) == (T0 - 7 * HOUR, T0 + 5 * HOUR)  # not the invalid one
    assert store.batch_timestamp_span(store.create_session("u").id) is None
    assert sorted(store.batch_segments(session_id)) == [(), EAST]
    assert sorted(store.batch_timestamps(session_id)) == [
        (T0 - 7 * HOUR, (), True),
        *((T0 + i * HOUR, (), False) for i in range(3)),
        (T0 + 2 * HOUR + 5, EAST, False),
        *((T0 + i * HOUR, (), False) for i in range(3, 6)),
    ]


def test_an_open_range_takes_the_ends_of_bigint_and_a_closed_one_stops_before_its_end(store):
    session_id = store.create_session("u").id
    lowest, highest = put(store, session_id, *(NewUpload("batch", dataset_timestamp=t) for t in (-(2**63), 2**63 - 1)))

    def between(start, end):
        return {u.id for u in store.batch_profiles_between(session_id, start, end)}

    assert between(None, None) == {lowest, highest}
    assert between(2**63 - 2, None) == {highest} and between(None, -(2**63) + 1) == {lowest}
    assert between(None, 2**63 - 1) == {lowest}  # [start, end): the end itself is not taken
    assert between(-(2**63), -(2**63)) == set() and between(None, -(2**63)) == set()
    assert between(2**63 - 1, 2**63) == {highest}  # an end past BIGINT: everything from the start


def test_the_buckets_of_a_session_s_batches_are_counted_in_the_database_as_the_timeline_buckets_them(store):
    session_id = store.create_session("u").id
    # around the epoch (negative timestamps floor down), Thursday 1970-01-01 and the Monday before
    stamps = [-DAY - 1, -DAY, -1, 0, 1, HOUR - 1, HOUR, 3 * DAY, 4 * DAY - 1, 4 * DAY, T0, T0 + 5, T0 + 7 * DAY]
    put(store, session_id, *(NewUpload("batch", dataset_timestamp=t) for t in stamps))
    late = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=T0 + 9 * DAY)], ttl_seconds=900)
    store_profile_bytes(store, late[0].id, b"late")  # pending, alone in its hour, day and week
    bad = put(store, session_id, NewUpload("batch", dataset_timestamp=T0 + 99 * DAY))[0]
    store.metadata.mark_invalid(bad, store.get_upload(bad).sha256, "not a profile")
    for granularity, size, offset in (("hour", HOUR, 0), ("day", DAY, 0), ("week", 7 * DAY, 3 * DAY)):
        settled = {bucket_bounds(t, granularity)[0] for t in stamps}
        every = settled | {bucket_bounds(T0 + 9 * DAY, granularity)[0]}
        assert store.batch_bucket_counts(session_id, size, offset) == (len(every), len(settled)), granularity
    assert store.batch_bucket_counts(store.create_session("u").id, HOUR) == (0, 0)


def test_a_range_reads_only_its_rows_from_the_session_index(store, database):
    session_id = store.create_session("u").id
    put(store, session_id, *(NewUpload("batch", dataset_timestamp=T0 + i * HOUR) for i in range(40)))
    assert len(store.batch_profiles_between(session_id, T0 + 10 * HOUR, T0 + 13 * HOUR)) == 3
    if database is None:
        conn = sqlite3.connect(store.metadata.path)
        try:
            plan = conn.execute("EXPLAIN QUERY PLAN " + BATCHES_BETWEEN, (session_id, 0, 1)).fetchall()
        finally:
            conn.close()
        assert [row[-1] for row in plan][0].startswith("SEARCH uploads USING INDEX uploads_by_session"), plan
        return
    walked, plan = index_walks(database, BATCHES_BETWEEN, (session_id, T0 + 10 * HOUR, T0 + 13 * HOUR), analyze=True)
    # one walk of the range in the session's index (a bitmap scan may count a few entries twice), not its 40 rows
    assert [name for name, _ in walked] == ["uploads_by_session"] and walked[0][1] < 20, plan


def test_a_day_s_mark_changes_when_one_of_its_batches_does_and_no_other_day_s_mark(store):
    session_id = store.create_session("u").id
    early = put(store, session_id, *(NewUpload("batch", dataset_timestamp=t) for t in (-1, 0, DAY - 1, T0, T0 + 5)))[0]
    put(store, session_id, NewUpload("reference", dataset_timestamp=T0), NewUpload("batch"))  # on no day
    day = T0 // DAY
    marks = store.batch_day_marks(session_id)
    assert sorted(marks) == [-1, 0, day]  # days floor down before the epoch, as the timeline's
    assert [marks[d][0] for d in (-1, 0, day)] == [1, 2, 2]  # first: how many batches

    def changed() -> set[int]:
        nonlocal marks
        now = store.batch_day_marks(session_id)
        found = {d for d in now.keys() | marks.keys() if now.get(d) != marks.get(d)}
        marks = now
        return found

    late = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=T0 + HOUR)], ttl_seconds=900)
    pending = store_profile_bytes(store, late[0].id, b"late")  # stored, not summarised yet
    assert changed() == {day}
    store.metadata.store_summary(pending.id, pending.sha256 or "", b"{}")  # summarised
    assert changed() == {day}
    store.metadata.mark_invalid(early, store.get_upload(early).sha256, "not a profile")
    assert changed() == {-1}
    assert changed() == set()  # nothing changed: the same marks
    ends = put(store, session_id, *(NewUpload("batch", dataset_timestamp=t) for t in (-(2**63), 2**63 - 1)))
    assert ends and changed() == {-(2**63) // DAY, (2**63 - 1) // DAY}  # the ends of BIGINT
    assert store.batch_day_marks(store.create_session("u").id) == {} and store.batch_day_marks("session-nope") == {}
