"""The SQL metadata store (server/storage/sql.py) called directly, on a real SQLite file per test.

Each test builds its own small store (a few milliseconds) and sets the store's clock (``now_ms``
of the module, its one seam besides the connection), so that every time the store writes or
compares is a value written here. Rows a test cannot reach through the store's methods (a
deleted row, a NULL size, an ingest state) are set with SQL on a second connection to the file.
The expected values are written out by hand: counts, orders, limits at N and N+1, filters, the
rows left alone, and what a repeated call changes (nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from whylogs_songbird.server.storage import sql as sql_module
from whylogs_songbird.server.storage.base import NewUpload, SessionGoneError, SlotLimitError, UploadRecord
from whylogs_songbird.server.storage.sql import DAY_MS, SQLITE
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore

#: scripts/mutation runs this file against the mutants of this module
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/sql.py")

#: The store's clock at the start of each test (epoch ms; a whole second).
T0 = 1_700_000_000_000
#: The largest and smallest BIGINT.
BIG = 2**63 - 1
SMALL = -(2**63)
UNKNOWN_SESSION = "session-" + "Z" * 24


class Clock:
    """The store's ``now_ms``, set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(T0)
    monkeypatch.setattr(sql_module, "now_ms", fixed)
    return fixed


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteMetadataStore]:
    metadata = SqliteMetadataStore(tmp_path / "m.sqlite3")
    yield metadata
    metadata.close()


def run_sql(store: SqliteMetadataStore, statement: str, params: tuple = ()) -> list[tuple]:
    """``statement`` on a second connection to the store's file (committed)."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
        return conn.execute(statement, params).fetchall()


def new_session(store: SqliteMetadataStore) -> str:
    return store.create_session("user").id


def slot(
    store: SqliteMetadataStore, session_id: str, ts: int | None = 100, *, kind="batch", tags=(), ttl: int = 600
) -> UploadRecord:
    spec = NewUpload(kind=kind, dataset_timestamp=ts, segment_tags=tuple(tags))
    return store.create_uploads(session_id, [spec], ttl_seconds=ttl)[0]


def stored(
    store: SqliteMetadataStore,
    session_id: str,
    ts: int | None = 100,
    *,
    kind="batch",
    tags=(),
    sha: str | None = None,
    size: int = 3,
) -> UploadRecord:
    """A slot marked stored under the key ``k/<id>`` (sha256 defaults to one of its own)."""
    upload = slot(store, session_id, ts, kind=kind, tags=tags)
    outcome = store.mark_stored(upload.id, key=f"k/{upload.id}", size=size, sha256=sha or f"sha-{upload.id}")
    return outcome.upload


def test_an_upload_is_recorded_as_landed_now_or_at_the_time_given(store, clock):
    session = new_session(store)
    now, given = slot(store, session), slot(store, session, 200)
    assert store.mark_stored(now.id, key="k/1", size=1, sha256="s1").upload.stored_at == T0
    assert store.mark_stored(given.id, key="k/2", size=1, sha256="s2", stored_at=T0 - 5).upload.stored_at == T0 - 5


def ids(uploads: list[UploadRecord]) -> list[str]:
    return [upload.id for upload in uploads]


# -- slot limits ---------------------------------------------------------------------------------


def test_open_slots_up_to_the_limit_are_granted_and_one_more_is_refused(store):
    session = new_session(store)
    first = store.create_uploads(session, [NewUpload("batch", 1)], ttl_seconds=60, max_open=2)
    assert len(first) == 1
    second = store.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60, max_open=2)
    assert len(second) == 1, "1 open + 1 new = 2 is within a limit of 2"
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 3)], ttl_seconds=60, max_open=2)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("open", 2, 2)
    assert run_sql(store, "SELECT COUNT(*) FROM uploads") == [(2,)], "nothing of a refused request is written"


def test_a_request_of_several_slots_is_judged_as_a_whole(store):
    session = new_session(store)
    slot(store, session, 1)
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 2), NewUpload("batch", 3)], ttl_seconds=60, max_open=2)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("open", 1, 2)
    granted = store.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60, max_open=2)
    assert [u.dataset_timestamp for u in granted] == [2]


def test_open_slots_count_only_unstored_unexpired_slots_of_the_session(store):
    session, other = new_session(store), new_session(store)
    stored(store, session, 1)  # stored: not open
    slot(store, session, 2, ttl=-1)  # expired a second ago
    slot(store, other, 3)  # another session's
    slot(store, session, 4, ttl=0)  # expires this very second: still open
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 5)], ttl_seconds=60, max_open=1)
    assert (refused.value.limit, refused.value.held) == ("open", 1)
    assert len(store.create_uploads(session, [NewUpload("batch", 5)], ttl_seconds=60, max_open=2)) == 1


def test_an_expired_slot_leaves_room_for_a_new_one(store):
    session = new_session(store)
    slot(store, session, 1, ttl=-1)
    granted = store.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60, max_open=1)
    assert [u.dataset_timestamp for u in granted] == [2]


def test_the_open_limit_alone_is_checked_without_a_profile_limit(store):
    session = new_session(store)
    slot(store, session, 1)
    with pytest.raises(SlotLimitError):
        store.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60, max_open=1, max_profiles=None)


def test_profiles_count_stored_ones_and_open_slots_up_to_the_limit(store):
    session = new_session(store)
    stored(store, session, 1)
    slot(store, session, 2)
    granted = store.create_uploads(session, [NewUpload("batch", 3)], ttl_seconds=60, max_profiles=3)
    assert len(granted) == 1, "1 stored + 1 open + 1 new = 3 is within a limit of 3"
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 4)], ttl_seconds=60, max_profiles=3)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("profiles", 3, 3)


def test_the_profile_limit_alone_is_checked_without_an_open_limit(store):
    session = new_session(store)
    stored(store, session, 1)
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60, max_open=None, max_profiles=1)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("profiles", 1, 1)


def test_a_refused_session_is_told_every_profile_it_holds_beyond_the_bound(store):
    session = new_session(store)
    for ts in range(4):
        stored(store, session, ts)
    slot(store, session, 9)
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 5)], ttl_seconds=60, max_profiles=2)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("profiles", 5, 2)


def test_a_session_at_the_profile_limit_is_told_its_exact_count(store):
    session = new_session(store)
    stored(store, session, 1)
    stored(store, session, 2)
    with pytest.raises(SlotLimitError) as refused:
        store.create_uploads(session, [NewUpload("batch", 3)], ttl_seconds=60, max_profiles=2)
    assert (refused.value.limit, refused.value.held, refused.value.allowed) == ("profiles", 2, 2)


def test_slots_are_created_with_their_spec_and_times(store, clock):
    session = new_session(store)
    clock.now = T0 + 1_999  # expiry counts from the whole second
    batch, ref, zipped = store.create_uploads(
        session,
        [
            NewUpload("batch", 7, segment_tags=(("b", "2"), ("a", "1"))),
            NewUpload("reference", None),
            NewUpload("batch", 8, alias="named", format="zip"),
        ],
        ttl_seconds=30,
    )
    assert batch.id.startswith("log-") and ref.id.startswith("ref-") and zipped.id.startswith("log-")
    assert (batch.created_at, batch.expires_at) == (T0 + 1_999, T0 // 1000 + 1 + 30)
    assert batch.alias is None and ref.alias == ref.id and zipped.alias == "named"
    assert zipped.format == "zip" and batch.format is None
    assert store.get_upload(batch.id) == batch
    assert store.get_upload(ref.id) == ref
    assert store.get_upload(zipped.id) == zipped
    assert store.get_upload(batch.id).segment_tags == (("b", "2"), ("a", "1"))


# -- per-day marks of a session's batches ------------------------------------------------------------


def test_day_marks_bucket_timestamps_into_utc_days_both_sides_of_the_epoch(store, clock):
    session = new_session(store)
    for ts in (-DAY_MS - 1, -DAY_MS, -1, 0, DAY_MS - 1, DAY_MS):
        stored(store, session, ts)
    assert {day: marks[0] for day, marks in store.batch_day_marks(session).items()} == {-2: 1, -1: 2, 0: 2, 1: 1}


def test_day_marks_sum_stored_times_and_sizes_modulo_the_prime(store, clock):
    session = new_session(store)
    clock.now = 3_000_000_026  # 3 * 1_000_000_007 + 5
    stored(store, session, 10, size=1_000_000_008)  # size modulo the prime: 1
    clock.now = 1_000_000_017  # 1_000_000_007 + 10
    stored(store, session, 20, size=4)
    clock.now = 7
    stored(store, session, DAY_MS, size=2)
    marks = store.batch_day_marks(session)
    assert marks == {0: (2, 3_000_000_026, 15, 5, 2, 0), 1: (1, 7, 7, 2, 1, 0)}


def test_day_marks_count_pending_and_invalid_and_take_a_missing_size_as_zero(store, clock):
    session = new_session(store)
    pending = stored(store, session, 1, size=5)
    ready = stored(store, session, 2, size=6)
    invalid = stored(store, session, 3, size=7)
    assert store.store_summary(ready.id, ready.sha256, b"s")
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    run_sql(store, "UPDATE uploads SET size = NULL WHERE id = ?", (pending.id,))
    assert store.batch_day_marks(session) == {0: (3, T0, 3 * (T0 % 1_000_000_007), 13, 1, 1)}


def test_day_marks_leave_out_what_is_not_a_stored_timed_batch_of_the_session(store, clock):
    session, other = new_session(store), new_session(store)
    kept = stored(store, session, 5)
    stored(store, session, None)  # no timestamp
    stored(store, session, 5, kind="reference")
    slot(store, session, 5)  # not stored
    stored(store, other, 5)
    gone = stored(store, session, 6)
    run_sql(store, "UPDATE uploads SET deleted_at = 1 WHERE id = ?", (gone.id,))
    duplicate = stored(store, session, 5, sha=kept.sha256)
    assert duplicate.duplicate_of == kept.id
    assert store.batch_day_marks(session) == {0: (1, T0, T0 % 1_000_000_007, 3, 1, 0)}


def test_day_marks_of_an_unknown_or_malformed_session_are_empty(store):
    assert store.batch_day_marks(UNKNOWN_SESSION) == {}
    assert store.batch_day_marks("not-a-session") == {}


# -- bucket counts, timestamps, span and segments of a session's batches ----------------------------


def test_bucket_counts_floor_negative_timestamps_and_count_settled_buckets(store):
    session = new_session(store)
    settled = [stored(store, session, ts) for ts in (-11, 0)]
    for ts in (-10, -1, 9, 10):
        stored(store, session, ts)
    for upload in settled:
        assert store.store_summary(upload.id, upload.sha256, b"s")
    # buckets of 10: -11 -> -2; -10, -1 -> -1; 0, 9 -> 0; 10 -> 1; settled: -2 and 0
    assert store.batch_bucket_counts(session, 10) == (4, 2)


def test_bucket_counts_shift_timestamps_by_the_offset(store):
    session = new_session(store)
    for ts in (-6, -5, 4, 5):
        stored(store, session, ts)
    # (ts + 5) in buckets of 10: -1 -> -1; 0, 9 -> 0; 10 -> 1; nothing settled
    assert store.batch_bucket_counts(session, 10, 5) == (3, 0)
    # (ts - 5): -11 -> -2; -10, -1 -> -1; 0 -> 0
    assert store.batch_bucket_counts(session, 10, -5) == (3, 0)


def test_bucket_counts_leave_out_invalid_profiles_and_other_sessions(store):
    session, other = new_session(store), new_session(store)
    invalid = stored(store, session, 50)
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    stored(store, session, 1)
    stored(store, other, 30)
    assert store.batch_bucket_counts(session, 10) == (1, 0)
    assert store.batch_bucket_counts(UNKNOWN_SESSION, 10) == (0, 0)
    assert store.batch_bucket_counts("bad id", 10) == (0, 0)


def test_batch_timestamps_are_distinct_by_timestamp_segment_and_pending(store):
    session, other = new_session(store), new_session(store)
    stored(store, session, 1)
    stored(store, session, 1)  # the same (1, no segment, pending): once
    stored(store, session, 1, tags=[("a", "x")])
    ready = stored(store, session, 2)
    assert store.store_summary(ready.id, ready.sha256, b"s")
    invalid = stored(store, session, 3)
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    stored(store, other, 4)
    assert sorted(store.batch_timestamps(session)) == [(1, (), True), (1, (("a", "x"),), True), (2, (), False)]
    assert store.batch_timestamps("bad id") == []
    assert store.batch_timestamps(UNKNOWN_SESSION) == []


def test_timestamp_span_is_the_oldest_and_newest_valid_batch(store):
    session, other = new_session(store), new_session(store)
    assert store.batch_timestamp_span(session) is None
    for ts in (5, -3, 12):
        stored(store, session, ts)
    for ts in (-100, 100):
        invalid = stored(store, session, ts)
        assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    stored(store, session, 200, kind="reference")
    stored(store, other, 300)
    assert store.batch_timestamp_span(session) == (-3, 12)
    assert store.batch_timestamp_span("bad id") is None


def test_timestamp_span_of_only_invalid_profiles_is_none(store):
    session = new_session(store)
    invalid = stored(store, session, 1)
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    assert store.batch_timestamp_span(session) is None


def test_batch_segments_are_the_distinct_segments_of_valid_batches(store):
    session, other = new_session(store), new_session(store)
    stored(store, session, 1, tags=[("a", "x")])
    stored(store, session, 2, tags=[("a", "x")])
    stored(store, session, 3)
    invalid = stored(store, session, 4, tags=[("a", "bad")])
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    stored(store, other, 5, tags=[("a", "other")])
    assert sorted(store.batch_segments(session)) == [(), (("a", "x"),)]
    assert store.batch_segments("bad id") == []


# -- batches in a range of timestamps ----------------------------------------------------------------


@pytest.fixture
def ranged(store, clock):
    """A session's batches at -5, 0, 10, 20 (created in the order 10, -5, 20, 0) and at both BIGINT ends."""
    session = new_session(store)
    by_ts = {}
    for ts in (10, -5, 20, 0, SMALL, BIG):
        clock.now += 1
        by_ts[ts] = stored(store, session, ts).id
    return session, by_ts


def test_batches_between_take_the_start_and_leave_out_the_end(store, ranged):
    session, by_ts = ranged
    assert ids(store.batch_profiles_between(session, 0, 20)) == [by_ts[10], by_ts[0]], "oldest created first"
    assert ids(store.batch_profiles_between(session, 0, 21)) == [by_ts[10], by_ts[20], by_ts[0]]
    assert ids(store.batch_profiles_between(session, 1, 20)) == [by_ts[10]]
    assert store.batch_profiles_between(session, 11, 20) == []


def test_batches_between_open_ends_reach_the_ends_of_bigint(store, ranged):
    session, by_ts = ranged
    everything = [by_ts[ts] for ts in (10, -5, 20, 0, SMALL, BIG)]
    assert ids(store.batch_profiles_between(session, None, None)) == everything
    assert ids(store.batch_profiles_between(session, 10, None)) == [by_ts[10], by_ts[20], by_ts[BIG]]
    assert ids(store.batch_profiles_between(session, None, 0)) == [by_ts[-5], by_ts[SMALL]]
    assert ids(store.batch_profiles_between(session, SMALL - 10, SMALL + 1)) == [by_ts[SMALL]]
    assert ids(store.batch_profiles_between(session, BIG, BIG + 10)) == [by_ts[BIG]]
    assert store.batch_profiles_between(session, None, SMALL) == [], "an end at the smallest BIGINT takes nothing"
    assert store.batch_profiles_between(session, None, SMALL - 1) == []


def test_batches_between_leave_out_what_is_not_a_stored_batch_of_the_session(store):
    session, other = new_session(store), new_session(store)
    kept = stored(store, session, 1)
    stored(store, session, 1, sha=kept.sha256)  # a duplicate
    stored(store, session, 1, kind="reference")
    slot(store, session, 1)
    stored(store, other, 1)
    gone = stored(store, session, 1)
    run_sql(store, "UPDATE uploads SET deleted_at = 1 WHERE id = ?", (gone.id,))
    invalid = stored(store, session, 1)
    assert store.mark_invalid(invalid.id, invalid.sha256, "bad")
    assert sorted(ids(store.batch_profiles_between(session, None, None))) == sorted([kept.id, invalid.id])
    assert store.batch_profiles_between("bad id", None, None) == []


# -- moving and deleting a session's uploads -------------------------------------------------------


def test_moving_stored_uploads_moves_only_stored_ones_and_names_them_in_id_order(store):
    source, target, other = new_session(store), new_session(store), new_session(store)
    moved = sorted([stored(store, source, 1).id, stored(store, source, 2, kind="reference").id])
    waiting = slot(store, source, 3)
    untouched = stored(store, other, 4)
    assert store.move_stored_uploads(source, target) == moved
    assert [store.get_upload(upload_id).session_id for upload_id in moved] == [target, target]
    assert store.get_upload(waiting.id).session_id == source
    assert store.get_upload(untouched.id).session_id == other
    assert store.move_stored_uploads(source, target) == [], "nothing stored is left to move"


def test_moving_uploads_needs_server_made_session_ids(store):
    session = new_session(store)
    with pytest.raises(ValueError):
        store.move_stored_uploads("bad id", session)
    with pytest.raises(ValueError):
        store.move_stored_uploads(session, "bad id")


def test_deleting_a_sessions_uploads_removes_rows_and_summaries_and_names_their_keys(store):
    session, other = new_session(store), new_session(store)
    first = stored(store, session, 1)
    second = stored(store, session, 2)
    slot(store, session, 3)  # no key yet
    assert store.store_summary(first.id, first.sha256, b"first")
    kept = stored(store, other, 1)
    assert store.store_summary(kept.id, kept.sha256, b"kept")
    assert sorted(store.delete_uploads(session)) == sorted([f"k/{first.id}", f"k/{second.id}"])
    assert run_sql(store, "SELECT COUNT(*) FROM uploads WHERE session_id = ?", (session,)) == [(0,)]
    assert run_sql(store, "SELECT upload_id FROM summaries") == [(kept.id,)]
    assert store.get_upload(kept.id).session_id == other
    assert store.delete_uploads(session) == []
    with pytest.raises(ValueError):
        store.delete_uploads("bad id")


# -- settings of datasets ----------------------------------------------------------------------------


def test_a_setting_is_written_read_and_replaced(store, clock):
    session, other = new_session(store), new_session(store)
    assert store.get_setting(session, "schema") is None
    store.put_setting(session, "schema", "v1")
    store.put_setting(other, "schema", "theirs")
    assert store.get_setting(session, "schema") == "v1"
    clock.now = T0 + 5
    store.put_setting(session, "schema", "v2")
    assert store.get_setting(session, "schema") == "v2"
    assert store.get_setting(other, "schema") == "theirs"
    assert store.get_setting(session, "Schema") is None
    assert run_sql(store, "SELECT value, updated_at FROM dataset_settings WHERE session_id = ?", (session,)) == [
        ("v2", T0 + 5)
    ]


def test_a_setting_needs_a_known_server_made_session(store):
    with pytest.raises(ValueError):
        store.put_setting("bad id", "k", "v")
    with pytest.raises(SessionGoneError):
        store.put_setting(UNKNOWN_SESSION, "k", "v")


def test_settings_are_listed_by_key_under_a_literal_prefix(store):
    session, other = new_session(store), new_session(store)
    for key in ("w.b", "w.a", "wx", "w_", "w%", "w\\z", "v.a"):
        store.put_setting(session, key, f"={key}")
    store.put_setting(other, "w.c", "theirs")
    assert store.list_settings(session, "w.") == [("w.a", "=w.a"), ("w.b", "=w.b")]
    assert store.list_settings(session, "w_") == [("w_", "=w_")]
    assert store.list_settings(session, "w%") == [("w%", "=w%")]
    assert store.list_settings(session, "w\\") == [("w\\z", "=w\\z")]
    assert [key for key, _ in store.list_settings(session)] == ["v.a", "w%", "w.a", "w.b", "w\\z", "w_", "wx"]
    assert store.list_settings(session, "q") == []


# -- derived artefacts -------------------------------------------------------------------------------


def test_dropping_derived_keys_takes_a_literal_prefix(store):
    session, other = new_session(store), new_session(store)
    for key in ("r.1", "r.2", "rx", "r_", "r%", "s"):
        store.put_derived(session, key, b"d")
    store.put_derived(other, "r.1", b"d")
    assert store.drop_derived(session, "r_") == 1
    assert store.drop_derived(session, "r%") == 1
    assert store.drop_derived(session, "r.") == 2
    assert store.get_derived(session, "rx") == b"d" and store.get_derived(other, "r.1") == b"d"
    assert store.drop_derived(session, "r.") == 0


def test_dropping_derived_keys_keeps_those_under_the_kept_prefix(store):
    session = new_session(store)
    for key in ("t.a.1", "t.a.2", "t.b.1", "t.a_1", "u"):
        store.put_derived(session, key, b"d")
    assert store.drop_derived(session, "t.", keep="t.a.") == 2, "t.b.1 and t.a_1 (the _ is literal)"
    assert store.get_derived(session, "t.a.1") == b"d" and store.get_derived(session, "t.a.2") == b"d"
    assert store.get_derived(session, "t.a_1") is None and store.get_derived(session, "u") == b"d"
    assert store.drop_derived(session, keep="t.a.") == 1, "no prefix: every key but the kept ones"
    assert store.get_derived(session, "u") is None


def test_derived_writes_are_put_and_dropped_in_order_and_a_deleted_session_keeps_no_new_ones(store):
    """write_derived: each write in order (a put then a drop under its prefix drops it; a drop keeps
    the keys under its kept prefix), and once the session is marked deleted its puts store nothing
    while its drops still apply."""
    session = new_session(store)
    upload_id = slot(store, session).id
    for key in ("r.a", "r.b", "s.x", "R.a"):
        store.put_derived(session, key, b"old")
    store.write_derived(session, [("put", "r.c", b"new"), ("drop", "r.", "r.b"), ("put", "t.1", b"one")])
    assert [store.get_derived(session, k) for k in ("r.a", "r.b", "r.c", "s.x", "t.1", "R.a")] == [
        None,
        b"old",
        None,
        b"old",
        b"one",
        b"old",  # the prefix matches case-sensitively (SQLite's LIKE alone would not)
    ]
    run_sql(store, "UPDATE sessions SET deleted_at = 1 WHERE id = ?", (session,))
    store.write_derived(session, [("put", "u.1", b"late"), ("drop", "s.", None)])
    assert (store.get_derived(session, "u.1"), store.get_derived(session, "s.x")) == (None, None)
    for not_a_session in ("not a session id", upload_id):  # an upload's id is no session's
        with pytest.raises(ValueError):
            store.write_derived(not_a_session, [("put", "k", b"v")])


def test_dropping_derived_keys_under_a_prefix_ending_in_a_wide_character(store):
    session = new_session(store)
    for key in ("p\u00ff1", "p\u0100", "p\ud7fe2", "p\ud7ff", "p\U0001f600x", "p\U0001f601", "pz"):
        store.put_derived(session, key, b"d")
    assert store.drop_derived(session, "p\u00ff") == 1
    assert store.drop_derived(session, "p\ud7fe") == 1
    assert store.drop_derived(session, "p\U0001f600") == 1
    assert {key for (key,) in run_sql(store, "SELECT key FROM derived")} == {"p\u0100", "p\ud7ff", "p\U0001f601", "pz"}


# -- expired slots ----------------------------------------------------------------------------------


def test_expired_slots_are_listed_oldest_first_up_to_the_limit(store, clock):
    session = new_session(store)
    late = slot(store, session, 1, ttl=-1)  # expires T0/1000 - 1
    early = slot(store, session, 2, ttl=-3)
    middle = slot(store, session, 3, ttl=-2)
    stored_slot = slot(store, session, 4, ttl=-5)
    store.mark_stored(stored_slot.id, key="k", size=1, sha256="s")
    now_s = T0 // 1000
    assert ids(store.expired_slots(expired_before=now_s, limit=3)) == [early.id, middle.id, late.id]
    assert ids(store.expired_slots(expired_before=now_s, limit=2)) == [early.id, middle.id]
    assert ids(store.expired_slots(expired_before=now_s - 1, limit=5)) == [early.id, middle.id], "strictly before"
    assert store.expired_slots(expired_before=now_s - 3, limit=5) == []


def test_deleting_expired_slots_deletes_only_the_named_unstored_expired_ones(store):
    session = new_session(store)
    now_s = T0 // 1000
    expired = [slot(store, session, ts, ttl=-1) for ts in (1, 2)]
    unnamed = slot(store, session, 3, ttl=-1)
    fresh = slot(store, session, 4, ttl=0)
    done = slot(store, session, 5, ttl=-1)
    store.mark_stored(done.id, key="k", size=1, sha256="s")
    named = [*ids(expired), fresh.id, done.id, "not-an-id"]
    assert store.delete_expired_slots(named, expired_before=now_s) == 2
    left = [u.id for u in (*expired, unnamed, fresh, done) if store.get_upload(u.id) is not None]
    assert left == [unnamed.id, fresh.id, done.id]
    assert store.delete_expired_slots(named, expired_before=now_s) == 0
    assert store.delete_expired_slots(["not-an-id"], expired_before=now_s) == 0
    assert store.delete_expired_slots([], expired_before=now_s) == 0


# -- API keys ---------------------------------------------------------------------------------------


def test_an_api_key_is_added_found_listed_and_revoked_once(store, clock):
    store.add_api_key("key-b", "org-1", "hash-b")
    clock.now = T0 + 1
    store.add_api_key("key-a", "org-2", "hash-a")
    store.add_api_key("key-c", "org-2", "hash-c")
    assert store.find_api_key("key-b") == {
        "key_id": "key-b",
        "org_id": "org-1",
        "secret_sha256": "hash-b",
        "created_at": T0,
        "revoked_at": None,
    }
    assert store.find_api_key("key-x") is None
    clock.now = T0 + 9
    assert store.revoke_api_key("key-a") is True
    clock.now = T0 + 20
    assert store.revoke_api_key("key-a") is False, "revoked already: its time stays"
    assert store.revoke_api_key("key-x") is False
    assert store.list_api_keys() == [
        {"key_id": "key-b", "org_id": "org-1", "created_at": T0, "revoked_at": None},
        {"key_id": "key-a", "org_id": "org-2", "created_at": T0 + 1, "revoked_at": T0 + 9},
        {"key_id": "key-c", "org_id": "org-2", "created_at": T0 + 1, "revoked_at": None},
    ]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_api_key("key-b", "org-3", "again")


# -- ingest claims ----------------------------------------------------------------------------------


def test_fresh_batch_takes_rows_up_to_the_byte_budget_and_at_least_one():
    def rows(*sizes, lease=None):
        return [{"size": size, "ingest_lease": lease} for size in sizes]

    assert sql_module._fresh_batch(rows(2, 3, 1), 5) == rows(2, 3), "2 + 3 = 5 fits a budget of 5"
    assert sql_module._fresh_batch(rows(4, 3), 5) == rows(4)
    assert sql_module._fresh_batch(rows(9, 1), 5) == rows(9), "the first row goes even when larger"
    assert sql_module._fresh_batch(rows(4, 3), None) == rows(4, 3)
    assert sql_module._fresh_batch(rows(None, None, 5), 1) == rows(None, None), "no size counts as 0"
    assert sql_module._fresh_batch(rows(1, 1), 5) + sql_module._fresh_batch([], 5) == rows(1, 1)


def test_fresh_batch_stops_at_a_row_whose_last_claim_died():
    fresh, dead = {"size": 1, "ingest_lease": None}, {"size": 1, "ingest_lease": 0}
    assert sql_module._fresh_batch([fresh, dead, fresh], None) == [fresh]
    assert sql_module._fresh_batch([dead, fresh], None) == []


def test_a_claim_takes_pending_profiles_oldest_first_within_the_byte_budget(store, clock):
    session = new_session(store)
    store.owner = "host-a"
    taken = []
    for ts, size in ((1, 4), (2, 4), (3, 4)):
        clock.now += 1
        taken.append(stored(store, session, ts, size=size))
    claimed = store.claim_ingest(lease_ms=1_000, limit=5, max_bytes=8)
    assert ids(claimed) == ids(taken[:2])
    assert [u.ingest_tries for u in claimed] == [0, 0]
    assert run_sql(
        store, "SELECT ingest_lease, ingest_owner, ingest_batch FROM uploads WHERE id = ?", (taken[0].id,)
    ) == [(clock.now + 1_000, "host-a", 2)]
    assert store.claimed_here == set(ids(taken[:2]))
    assert ids(store.claim_ingest(lease_ms=1_000, limit=5, max_bytes=8)) == [taken[2].id]
    assert store.claim_ingest(lease_ms=1_000, limit=5) == []


def test_a_dead_claim_of_one_profile_is_charged_to_it_and_it_goes_alone(store, clock):
    session = new_session(store)
    first = stored(store, session, 1)
    clock.now += 1
    second = stored(store, session, 2)
    assert ids(store.claim_ingest(lease_ms=1_000, limit=1)) == [first.id]
    assert store.release_ingest_claims() == 1, "a host's start ends its claims"
    again = store.claim_ingest(lease_ms=1_000, limit=5)
    assert ids(again) == [first.id], "a dead claim's profile goes alone"
    assert again[0].ingest_tries == 1
    assert run_sql(store, "SELECT ingest_tries, ingest_batch FROM uploads WHERE id = ?", (first.id,)) == [(1, 1)]
    assert ids(store.claim_ingest(lease_ms=1_000, limit=5)) == [second.id]


def test_a_dead_claim_of_several_profiles_is_charged_to_none_of_them(store, clock):
    session = new_session(store)
    first, second = stored(store, session, 1), stored(store, session, 2)
    assert len(store.claim_ingest(lease_ms=1_000, limit=5)) == 2
    assert store.release_ingest_claims() == 2
    retried = store.claim_ingest(lease_ms=1_000, limit=5)
    assert len(retried) == 1 and retried[0].ingest_tries == 0
    assert sorted(ids(retried + store.claim_ingest(lease_ms=1_000, limit=5))) == sorted([first.id, second.id])


def test_a_dead_claim_with_no_recorded_batch_counts_as_alone(store):
    session = new_session(store)
    upload = stored(store, session, 1)
    run_sql(store, "UPDATE uploads SET ingest_lease = 0, ingest_batch = NULL WHERE id = ?", (upload.id,))
    assert [u.ingest_tries for u in store.claim_ingest(lease_ms=1_000)] == [1]


def test_a_profile_charged_max_tries_times_is_marked_invalid_with_its_last_error(store, clock):
    session = new_session(store)
    upload = stored(store, session, 1)
    run_sql(
        store,
        "UPDATE uploads SET ingest_lease = 0, ingest_batch = 1, ingest_tries = 1, ingest_error = 'boom' WHERE id = ?",
        (upload.id,),
    )
    assert ids(store.claim_ingest(lease_ms=1_000, max_tries=3)) == [upload.id], "2 tries of 3: taken"
    run_sql(store, "UPDATE uploads SET ingest_lease = 0 WHERE id = ?", (upload.id,))
    assert store.claim_ingest(lease_ms=1_000, max_tries=3) == [], "3 tries of 3: given up on"
    record = store.get_upload(upload.id)
    assert (record.ingest_state, record.ingest_tries, record.ingest_lease) == ("invalid", 3, None)
    assert record.ingest_error == "summarising it failed 3 times, so it is not tried again (last time: boom)"
    assert store.pending_ingest() == 0


def test_a_profile_given_up_on_without_an_error_says_the_server_stopped(store):
    session = new_session(store)
    upload = stored(store, session, 1)
    run_sql(store, "UPDATE uploads SET ingest_lease = 0, ingest_tries = 2 WHERE id = ?", (upload.id,))
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000, max_tries=3) is False
    assert store.get_upload(upload.id).ingest_error == (
        "summarising it failed 3 times, so it is not tried again (last time: the server stopped while summarising it)"
    )


def test_the_reason_a_profile_is_given_up_on_is_cut_at_500_characters(store):
    session = new_session(store)
    upload = stored(store, session, 1)
    run_sql(
        store,
        "UPDATE uploads SET ingest_lease = 0, ingest_tries = 5, ingest_error = ? WHERE id = ?",
        ("e" * 600, upload.id),
    )
    assert store.claim_ingest(lease_ms=1_000, max_tries=3) == []
    error = store.get_upload(upload.id).ingest_error
    assert len(error) == 500 and error.startswith("summarising it failed 6 times")


def test_one_profile_is_claimed_by_id_once_and_its_dead_claim_is_charged(store, clock):
    session = new_session(store)
    store.owner = "host-a"
    upload = stored(store, session, 1)
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000) is True
    assert store.claimed_here == {upload.id}
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000) is False, "held"
    assert run_sql(store, "SELECT ingest_lease, ingest_owner, ingest_batch FROM uploads") == [(T0 + 1_000, "host-a", 1)]
    assert store.release_ingest_claims(owner="host-b") == 0
    assert store.release_ingest_claims(owner="host-a") == 1
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000) is True
    assert run_sql(store, "SELECT ingest_tries FROM uploads") == [(1,)]
    assert store.claim_upload_ingest("log-" + "Z" * 24, lease_ms=1_000) is False


def test_releasing_a_claim_counts_a_try_and_keeps_a_note(store):
    session = new_session(store)
    store.owner = "host-a"
    upload = stored(store, session, 1)
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000)
    assert store.release_ingest_claim(upload.id, upload.sha256, note="n" * 450) is True
    assert store.claimed_here == set()
    assert run_sql(store, "SELECT ingest_lease, ingest_tries, length(ingest_error) FROM uploads") == [(None, 1, 400)]
    assert store.release_ingest_claim(upload.id, upload.sha256) is False, "no claim is held"
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000)
    assert store.release_ingest_claim(upload.id, upload.sha256, counted=False) is True
    assert run_sql(store, "SELECT ingest_tries, length(ingest_error) FROM uploads") == [(1, 400)], (
        "no note: the last stays"
    )


def test_a_claim_is_released_only_by_its_owner_with_the_right_bytes(store):
    session = new_session(store)
    store.owner = "host-a"
    upload = stored(store, session, 1)
    assert store.claim_upload_ingest(upload.id, lease_ms=1_000)
    assert store.release_ingest_claim(upload.id, "other-sha") is False
    store.owner = "host-b"
    assert store.release_ingest_claim(upload.id, upload.sha256) is False
    assert run_sql(store, "SELECT ingest_lease FROM uploads") == [(T0 + 1_000,)]


def test_claims_are_renewed_for_the_owner_only(store, clock):
    session = new_session(store)
    store.owner = "host-a"
    first, second, free = (stored(store, session, ts) for ts in (1, 2, 3))
    assert store.claim_upload_ingest(first.id, lease_ms=1_000) and store.claim_upload_ingest(second.id, lease_ms=1_000)
    clock.now = T0 + 500
    assert store.renew_ingest_claims([first.id, free.id], lease_ms=2_000) == {first.id}
    assert run_sql(
        store, "SELECT id, ingest_lease FROM uploads WHERE ingest_lease IS NOT NULL ORDER BY ingest_lease"
    ) == [
        (second.id, T0 + 1_000),
        (first.id, T0 + 2_500),
    ]
    store.owner = "host-b"
    assert store.renew_ingest_claims([second.id], lease_ms=2_000) == set()
    assert store.renew_ingest_claims([], lease_ms=2_000) == set()


def test_storing_a_summary_or_a_verdict_ends_the_claim_here(store):
    session = new_session(store)
    ready, invalid = stored(store, session, 1), stored(store, session, 2)
    assert len(store.claim_ingest(lease_ms=1_000, limit=2)) == 2
    assert store.mark_invalid(invalid.id, invalid.sha256, "r" * 600) is True
    assert store.claimed_here == {ready.id}
    assert store.store_summaries([(ready.id, ready.sha256, b"sum"), (invalid.id, "wrong-sha", b"x")]) == [True, False]
    assert store.claimed_here == set()
    assert store.get_summary(ready.id, ready.sha256) == b"sum"
    assert store.get_summary(ready.id, "other") is None
    assert run_sql(
        store, "SELECT ingest_state, ingest_lease, length(ingest_error) FROM uploads ORDER BY ingest_state"
    ) == [
        ("invalid", None, 500),
        ("ready", None, None),
    ]
    assert store.pending_ingest() == 0


# -- recording stored bytes -------------------------------------------------------------------------


def test_a_slot_without_a_segment_takes_the_segment_of_its_profile(store):
    session = new_session(store)
    plain, tagged = slot(store, session, 1), slot(store, session, 1, tags=[("a", "slot")])
    outcome = store.mark_stored(plain.id, key="k1", size=1, sha256="s1", segment_tags=(("a", "header"),))
    assert outcome.upload.segment_tags == (("a", "header"),)
    assert store.get_upload(plain.id).segment_tags == (("a", "header"),)
    outcome = store.mark_stored(tagged.id, key="k2", size=1, sha256="s2", segment_tags=(("a", "header"),))
    assert store.get_upload(tagged.id).segment_tags == (("a", "slot"),), "the slot's segment wins"
    assert outcome.upload.segment_tags == (("a", "slot"),)


def test_segment_tags_are_stored_as_utf8_json(store):
    session = new_session(store)
    upload = slot(store, session, 1, tags=[("é", "\U0001f600")])
    assert run_sql(store, "SELECT segment_tags FROM uploads") == [('[{"key": "é", "value": "\U0001f600"}]',)]
    assert store.get_upload(upload.id).segment_tags == (("é", "\U0001f600"),)


def test_a_retried_put_of_recorded_bytes_changes_nothing(store, clock):
    session = new_session(store)
    original = stored(store, session, 1, sha="same", size=3)
    duplicate = stored(store, session, 1, sha="same", size=3)
    assert duplicate.duplicate_of == original.id
    clock.now += 50
    again = store.mark_stored(duplicate.id, key="k/again", size=3, sha256="same")
    assert (again.recorded, again.duplicate_of, again.upload.stored_at) == (False, original.id, T0)
    again = store.mark_stored(original.id, key="k/again", size=3, sha256="same")
    assert (again.recorded, again.duplicate_of, again.upload.path) == (False, None, f"k/{original.id}")


def test_bytes_without_a_key_are_recorded_only_as_a_duplicate(store):
    session = new_session(store)
    upload = slot(store, session, 1)
    outcome = store.mark_stored(upload.id, key=None, size=3, sha256="nothing-like-it")
    assert (outcome.recorded, outcome.duplicate_of, outcome.upload.stored_at) == (False, None, None)
    assert store.get_upload(upload.id).stored_at is None


def test_a_duplicate_keeps_no_verdict_of_its_own(store):
    session = new_session(store)
    original = stored(store, session, 1, sha="same")
    outcome = store.mark_stored(slot(store, session, 1).id, key="k", size=3, sha256="same", invalid="too big")
    assert (outcome.duplicate_of, outcome.upload.ingest_state, outcome.upload.ingest_error) == (original.id, None, None)
    assert run_sql(store, "SELECT ingest_state, ingest_error, path FROM uploads WHERE duplicate_of IS NOT NULL") == [
        (None, None, None)
    ]


def test_storing_once_only_refuses_a_stored_slot_naming_it(store):
    session = new_session(store)
    upload = stored(store, session, 1)
    with pytest.raises(sql_module.UploadAlreadyStoredError) as refused:
        store.mark_stored(upload.id, key="k", size=9, sha256="other", if_unstored=True)
    assert refused.value.args == (upload.id,)
    with pytest.raises(sql_module.UploadAlreadyStoredError) as refused:
        store.mark_refused(upload.id, size=9, reason="r")
    assert refused.value.args == (upload.id,)


def test_a_refused_slot_is_recorded_invalid_without_bytes(store, clock):
    session = new_session(store)
    upload = slot(store, session, 1)
    clock.now = T0 + 7
    refused = store.mark_refused(upload.id, size=12, reason="too large")
    assert (refused.stored_at, refused.size, refused.sha256, refused.path) == (T0 + 7, 12, "unread-12", None)
    assert (refused.ingest_state, refused.ingest_error, refused.duplicate_of) == ("invalid", "too large", None)
    assert store.get_upload(upload.id) == refused


def test_unmarking_needs_one_key_per_upload(store):
    with pytest.raises(ValueError, match="^give one key per upload id$"):
        store.unmark_stored(["log-" + "A" * 24], keys=[])


# -- listings of a session's profiles -----------------------------------------------------------------


def test_malformed_ids_are_unknown_even_when_a_row_carries_them(store):
    session = new_session(store)
    odd_session, odd_upload, odd_ref = "log-" + "S" * 24, "session-" + "U" * 24, "log-" + "R" * 24
    run_sql(store, "INSERT INTO sessions (id, user_id, org_id, created_at) VALUES (?, 'u', 'guest', 1)", (odd_session,))
    columns = "(id, session_id, kind, dataset_timestamp, created_at, expires_at, stored_at, segment_tags)"
    for upload_id, owner, kind, stored_at in (
        ("ref-" + "A" * 24, odd_session, "reference", 1),
        ("log-" + "B" * 24, odd_session, "batch", 1),
        ("log-" + "C" * 24, odd_session, "batch", None),
        (odd_upload, session, "batch", 1),
        (odd_ref, session, "reference", 1),
    ):
        row = (upload_id, owner, kind, stored_at)
        run_sql(store, f"INSERT INTO uploads {columns} VALUES (?, ?, ?, 5, 1, 9999999999, ?, '[]')", row)  # noqa: S608
    assert store.get_session(odd_session) is None
    assert store.claim(odd_session, "org") is None
    assert store.list_profiles(odd_session) == []
    assert store.find_batch_profiles(odd_session, 5) == []
    assert store.get_reference(odd_session, "ref-" + "A" * 24) is None
    assert store.get_reference(session, odd_ref) is None
    assert store.unstored_uploads(session_id=odd_session) == []
    assert store.get_upload(odd_upload) is None
    assert store.batch_profiles_between(odd_session, None, None) == []
    assert store.batch_timestamp_span(odd_session) is None
    assert store.batch_segments(odd_session) == []
    assert store.batch_bucket_counts(odd_session, 10) == (0, 0)
    assert store.batch_day_marks(odd_session) == {}
    assert store.batch_timestamps(odd_session) == []
    for refused in (
        lambda: store.move_stored_uploads(odd_session, session),
        lambda: store.move_stored_uploads(session, odd_session),
        lambda: store.delete_uploads(odd_session),
        lambda: store.put_setting(odd_session, "k", "v"),
    ):
        with pytest.raises(ValueError, match="not a server-made id"):
            refused()
    assert len(store.unstored_uploads()) == 1, "the rows are there"


def test_a_dataset_container_is_made_once_per_org_and_dataset(store, clock):
    first = store.dataset_container("org-1", "ds")
    assert sql_module.is_valid_id(first.id, "session")
    assert (first.org_id, first.dataset_id, first.user_id, first.created_at) == ("org-1", "ds", "", T0)
    assert store.dataset_container("org-1", "ds") == first
    assert store.find_dataset("org-1", "ds") == first
    other = store.dataset_container("org-2", "ds")
    assert other.id != first.id and store.find_dataset("org-2", "ds") == other
    assert store.find_dataset("org-1", "other") is None
    assert store.claim(first.id, "org-9") is None, "a dataset is never claimed as a session"


def test_a_fresh_schema_logs_its_columns_at_debug_only(tmp_path, caplog):
    with caplog.at_level("DEBUG", logger="whylogs_songbird.server.storage"):
        SqliteMetadataStore(tmp_path / "fresh.sqlite3").close()
    added = [record for record in caplog.records if "added column" in record.getMessage()]
    assert len(added) == len(sql_module.MIGRATIONS)
    assert {record.levelname for record in added} == {"DEBUG"}


def test_index_name_refuses_a_statement_that_makes_no_index():
    assert sql_module.index_name("CREATE UNIQUE INDEX IF NOT EXISTS by_x ON t (x)") == "by_x"
    with pytest.raises(ValueError) as refused:
        sql_module.index_name("CREATE TABLE t (x)")
    assert str(refused.value) == "not an index statement of the schema: 'CREATE TABLE t (x)'"
    with pytest.raises(ValueError) as refused:
        sql_module.index_name("SELECT " + "x" * 100)
    assert str(refused.value) == f"not an index statement of the schema: {'SELECT ' + 'x' * 53!r}"


def test_stored_keys_summaries_derived_and_counters_read_back(store):
    session = new_session(store)
    upload = stored(store, session, 1)
    slot(store, session, 2)
    assert list(store.stored_keys()) == [(upload.id, f"k/{upload.id}")]
    store.put_derived(session, "d", b"one")
    store.put_derived(session, "d", b"two")
    assert store.get_derived(session, "d") == b"two"
    assert store.get_derived(session, "e") is None
    store.add_counts({"put": 2, "claim": 1})
    store.count("put")
    assert store.stats()["put"] == 3 and store.stats()["claim"] == 1 and store.stats()["upload"] == 0
    store.reset_stats()
    assert store.stats()["put"] == 0


def test_a_landed_slot_is_claimed_for_its_owner(store, clock):
    session = new_session(store)
    store.owner = "host-a"
    upload = slot(store, session, 1)
    assert store.claim_landed([upload.id, "bad id"], lease_ms=1_000) == {upload.id}
    record = store.get_upload(upload.id)
    assert (record.learn_lease, record.learn_owner) == (T0 + 1_000, "host-a")
    assert store.claim_landed([upload.id], lease_ms=1_000) == set(), "held"
    store.release_landed([upload.id])
    assert store.get_upload(upload.id).learn_lease is None


def test_a_refused_slot_that_was_a_duplicate_before_it_was_unmarked_is_none_now(store):
    session = new_session(store)
    original = stored(store, session, 1, sha="same")
    duplicate = stored(store, session, 1, sha="same")
    assert store.unmark_stored([duplicate.id]) == 1
    refused = store.mark_refused(duplicate.id, size=4, reason="r")
    assert refused.duplicate_of is None and store.get_upload(duplicate.id).duplicate_of is None
    assert store.get_upload(original.id).stored_at == T0


def test_dropping_derived_keys_on_sqlite_matches_the_prefix_case_sensitively(store):
    session = new_session(store)
    for key in ("r.1", "R.1", "T.A1", "T.a1", "x\U0001f600a1", "X\U0001f600A1", "q\ud7ff1"):
        store.put_derived(session, key, b"d")
    assert store.drop_derived(session, "r.") == 1
    assert store.drop_derived(session, "T.A") == 1
    assert store.drop_derived(session, "x\U0001f600a") == 1
    assert store.drop_derived(session, "q\ud7ff") == 1
    assert {key for (key,) in run_sql(store, "SELECT key FROM derived")} == {"R.1", "T.a1", "X\U0001f600A1"}


def test_the_kept_prefix_of_dropped_derived_keys_is_literal(store):
    session = new_session(store)
    for key in ("a%1", "ab", "b_1", "bc"):
        store.put_derived(session, key, b"d")
    assert store.drop_derived(session, keep="a%") == 3
    assert store.get_derived(session, "a%1") == b"d"
    store.put_derived(session, "b_1", b"d")
    store.put_derived(session, "bc", b"d")
    assert store.drop_derived(session, keep="b_") == 2, "a%1 and bc"
    assert {key for (key,) in run_sql(store, "SELECT key FROM derived")} == {"b_1"}


# -- what another writer's commit between a read and a write changes --------------------------------


class WatchedConnection:
    """A store's connection that records each statement and, once, right after the rows of the
    first statement starting with ``after`` are read, runs ``then`` in the same transaction: what
    another host's commit in between looks like to a PostgreSQL transaction (READ COMMITTED)."""

    def __init__(self, conn: sqlite3.Connection, store: WatchedStore) -> None:
        self.conn, self.store = conn, store

    def cursor(self) -> WatchedCursor:
        return WatchedCursor(self.conn.cursor(), self)


class WatchedCursor:
    def __init__(self, cursor: sqlite3.Cursor, connection: WatchedConnection) -> None:
        self.cursor, self.connection, self.statement = cursor, connection, ""

    def execute(self, statement: str, params: tuple = ()) -> None:
        self.statement = statement
        self.connection.store.statements.append(statement)
        self.cursor.execute(statement, params)

    @property
    def description(self):
        return self.cursor.description

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    def fetchall(self) -> list:
        rows = self.cursor.fetchall()
        store = self.connection.store
        if store.after and self.statement.startswith(store.after):
            store.after = ""
            self.connection.conn.execute(*store.then)
        return rows

    def close(self) -> None:
        self.cursor.close()


class WatchedStore(SqliteMetadataStore):
    def __init__(self, path: Path, after: str = "", then: tuple = ("",)) -> None:
        self.statements: list[str] = []
        self.after, self.then = after, then
        super().__init__(path)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[WatchedConnection]:  # type: ignore[override]
        with super()._transaction() as conn:
            yield WatchedConnection(conn, self)


def index_statements(statements: list[str]) -> list[str]:
    return [statement for statement in statements if " INDEX IF NOT EXISTS " in statement]


def test_a_reopened_store_asks_for_no_index_it_has(tmp_path, clock):
    fresh = WatchedStore(tmp_path / "m.sqlite3")
    schema = index_statements([*sql_module.SCHEMA, *sql_module.LATE_INDEXES])
    assert sorted(index_statements(fresh.statements)) == sorted(schema), "a fresh file: each index once"
    fresh.close()
    reopened = WatchedStore(tmp_path / "m.sqlite3")
    assert index_statements(reopened.statements) == []
    reopened.close()


def test_a_slot_stored_by_another_writer_after_it_was_read_is_refused_naming_it(tmp_path, clock):
    store = WatchedStore(
        tmp_path / "m.sqlite3",
        after="SELECT uploads.*, sessions.claimed_at",
        then=("UPDATE uploads SET stored_at = 1",),
    )
    session = new_session(store)
    first, second = slot(store, session, 1), slot(store, session, 2)
    with pytest.raises(sql_module.UploadAlreadyStoredError) as refused:
        store.mark_refused(first.id, size=1, reason="r")
    assert refused.value.args == (first.id,)
    store.after = "SELECT uploads.*, sessions.claimed_at"
    with pytest.raises(sql_module.UploadAlreadyStoredError) as refused:
        store.mark_stored(second.id, key="k", size=1, sha256="s", if_unstored=True)
    assert refused.value.args == (second.id,)
    store.close()


def test_a_profile_claimed_by_another_host_after_it_was_read_is_not_claimed_here(tmp_path, clock):
    store = WatchedStore(
        tmp_path / "m.sqlite3",
        after="SELECT * FROM uploads WHERE ingest_state = 'pending'",
        then=("UPDATE uploads SET ingest_lease = ?", (T0 + 60_000,)),
    )
    session = new_session(store)
    stored(store, session, 1)
    assert store.claim_ingest(lease_ms=1_000) == []
    assert store.claimed_here == set()
    store.close()


# -- row locks: which rows a transaction locks, and in which order -----------------------------------
# On PostgreSQL these locks keep concurrent writers from deadlocking or breaking a foreign key (the
# races themselves are run in tests/server/storage/test_deletion_races.py, over a real PostgreSQL).
# Here the store runs on SQLite with PostgreSQL's lock clauses spelt as SQL comments: SQLite runs
# the statements as before, and the statements a transaction ran say what it locked and when.

LOCKS = dataclasses.replace(
    SQLITE,
    for_update=" /* for update */",
    skip_locked=" /* skip locked */",
    key_share=" /* key share */",
    no_key_update=" /* no key update */",
)


class LockSpelling(SqliteMetadataStore):
    """The SQLite store with :data:`LOCKS`, keeping each statement it runs with its parameters."""

    dialect = LOCKS

    def __init__(self, path: Path) -> None:
        self.ran: list[tuple[str, tuple]] = []
        super().__init__(path)

    def _exec(self, conn, statement, params=()):
        self.ran.append((statement, tuple(params)))
        return super()._exec(conn, statement, params)

    def _rowcount(self, conn, statement, params=()):
        self.ran.append((statement, tuple(params)))
        return super()._rowcount(conn, statement, params)


@pytest.fixture
def locking(tmp_path: Path, clock: Clock) -> Iterator[LockSpelling]:
    metadata = LockSpelling(tmp_path / "locks.sqlite3")
    yield metadata
    metadata.close()


def test_slots_under_a_limit_lock_the_session_row_for_update_before_counting(locking):
    """Counting a session's slots locks its row FOR UPDATE later: a limited request takes that lock
    first (two key-share holders each upgrading would deadlock); an unlimited one takes a key share."""
    session = new_session(locking)
    live = "SELECT id FROM sessions WHERE id = ? AND deleted_at IS NULL"
    locking.ran.clear()
    locking.create_uploads(session, [NewUpload("batch", 1)], ttl_seconds=60, max_open=5)
    assert locking.ran[0] == (live + " /* for update */", (session,))
    locking.ran.clear()
    locking.create_uploads(session, [NewUpload("batch", 2)], ttl_seconds=60)
    assert locking.ran[0] == (live + " /* key share */", (session,))


def test_removing_a_sessions_uploads_locks_its_row_then_its_uploads_in_id_order_first(locking):
    session = new_session(locking)
    for ts in (1, 2, 3):
        stored(locking, session, ts)
    locking.ran.clear()
    assert len(locking.delete_uploads(session)) == 3
    assert locking.ran[:2] == [
        ("SELECT id FROM sessions WHERE id = ? /* for update */", (session,)),
        ("SELECT id FROM uploads WHERE session_id = ? ORDER BY id /* for update */", (session,)),
    ]
    assert not any(statement.startswith("DELETE") for statement, _ in locking.ran[:2])


def test_summaries_are_written_in_id_order_and_answered_in_the_order_given(locking):
    session = new_session(locking)
    uploads = sorted((slot(locking, session, ts) for ts in (1, 2, 3)), key=lambda u: u.id)
    shas = {u.id: sha for u, sha in zip(uploads, ("z", "y", "x"))}  # against the ids' order
    for upload in uploads:
        locking.mark_stored(upload.id, key=f"k/{upload.id}", size=1, sha256=shas[upload.id])
    given = [uploads[2], uploads[0], uploads[1]]
    locking.ran.clear()
    outcome = locking.store_summaries([(u.id, shas[u.id] if u is not uploads[0] else "other", b"s") for u in given])
    assert outcome == [True, False, True], "the second given (uploads[0]) has other bytes than those stored"
    updated = [params[0] for statement, params in locking.ran if statement.startswith("UPDATE uploads")]
    assert updated == [u.id for u in uploads]


def test_a_batch_of_profiles_is_claimed_in_id_order_and_answered_in_the_order_stored(locking, clock):
    session = new_session(locking)
    uploads = [slot(locking, session, ts) for ts in (1, 2, 3)]
    by_id = sorted(uploads, key=lambda u: u.id)
    landed = [by_id[1], by_id[2], by_id[0]]  # stored out of id order
    for n, upload in enumerate(landed):
        locking.mark_stored(upload.id, key=f"k/{upload.id}", size=1, sha256=f"s{n}", stored_at=T0 - 10 + n)
    locking.ran.clear()
    assert ids(locking.claim_ingest(lease_ms=1_000, limit=5)) == [u.id for u in landed]
    taken = [params[4] for statement, params in locking.ran if statement.startswith("UPDATE uploads SET ingest_lease")]
    assert taken == [u.id for u in by_id]
