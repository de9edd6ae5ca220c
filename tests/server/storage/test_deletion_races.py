"""Removing a profile while the ingest worker stores its summary, and writing to a session while
it is deleted, on both stores.

Every removal of upload rows (an aborted transaction's ``delete_uploads``, the purge of a deleted
session or profile, the purge after retention marked a profile) may meet the ingest worker's
``store_summaries`` of one of those profiles. On SQLite one writer at a time orders them; on
PostgreSQL their transactions interleave. Either way the outcome is defined and no error: a
summary stored first is removed with its upload, a summary coming after finds no upload (or one
marked deleted) and is not stored.

The PostgreSQL interleaving is made without sleeps: a second connection holds the row lock of
another profile the ingest's batch writes after the raced one, so the ingest stops between its
summary's insert and its commit; the removal starts then, and the lock is given back once the
removal waits for the ingest (or has finished).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psycopg
import pytest
import requests
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.app import SESSION_GONE_MESSAGE
from whylogs_songbird.server.lifecycle import deletions, purge
from whylogs_songbird.server.storage.base import NewUpload, SessionGoneError, now_ms
from whylogs_songbird.server.storage.deletion import PurgeItem
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store, UploadRecord

TS = 1_700_000_000_000
LEASE_MS = 60_000
#: How long the test waits for a backend to block or a thread to end before it fails.
DEADLINE_SECONDS = 20.0


@dataclass(frozen=True)
class Removal:
    """A way a profile goes: ``mark`` before the ingest's write (what it returns is passed on),
    ``remove`` after."""

    name: str
    #: makes the container of the raced profile
    container: Callable[[Store], str]
    mark: Callable[[Store, str, str], object]
    remove: Callable[[Store, str, object], None]
    #: whether ``mark`` marks the profile deleted (an aborted transaction's are removed at once)
    marks: bool = True


def _claimed(store: Store, marked: bool) -> list[PurgeItem]:
    """The purges claimed once the profile was marked: the purge's claim is a transaction of its own,
    so the ingest's write may come between it and the purge."""
    assert marked, "the profile was marked deleted"
    return deletions(store).claim_purges(lease_ms=LEASE_MS, limit=10)


def _purged(store: Store, items: object) -> None:
    assert isinstance(items, list) and items, "a purge was claimed"
    for item in items:
        purge(store, item)


REMOVALS = [
    Removal(
        "aborted transaction",
        lambda store: store.dataset_container("org-1", "model-1/transaction/t1").id,
        lambda store, session_id, upload_id: None,
        lambda store, session_id, marked: store.delete_uploads(session_id) and None,
        marks=False,
    ),
    Removal(
        "session deleted",
        lambda store: store.create_session("u").id,
        lambda store, session_id, upload_id: _claimed(store, deletions(store).mark_session_deleted(session_id)),
        lambda store, session_id, marked: _purged(store, marked),
    ),
    Removal(
        "profile deleted",
        lambda store: store.create_session("u").id,
        lambda store, session_id, upload_id: _claimed(
            store, deletions(store).mark_upload_deleted(session_id, upload_id)
        ),
        lambda store, session_id, marked: _purged(store, marked),
    ),
    Removal(
        "retention",
        lambda store: store.create_session("u").id,
        lambda store, session_id, upload_id: _claimed(
            store, deletions(store).mark_expired(stored_before=now_ms() + 1, limit=10) == 1
        ),
        lambda store, session_id, marked: _purged(store, marked),
    ),
]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(tmp_path / "data")
    else:
        s = Store(
            tmp_path / "data", metadata=PostgresMetadataStore(request.getfixturevalue("postgres_service").new_schema())
        )
    yield s
    s.close()


def _stored(store: Store, session_id: str, data: bytes) -> UploadRecord:
    upload = store.create_upload(session_id, "batch", ttl_seconds=600, dataset_timestamp=TS)
    return store_profile_bytes(store, upload.id, data)


def _summaries(store: Store, upload_id: str) -> int:
    return int(store.metadata._query("SELECT COUNT(*) AS n FROM summaries WHERE upload_id = ?", (upload_id,))[0]["n"])


def _uploads(store: Store, upload_id: str) -> int:
    return int(store.metadata._query("SELECT COUNT(*) AS n FROM uploads WHERE id = ?", (upload_id,))[0]["n"])


def _claim_all(store: Store, count: int) -> None:
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=8)
    assert len(claimed) == count


@pytest.mark.parametrize("removal", REMOVALS, ids=lambda r: r.name)
@pytest.mark.parametrize("order", ["summary first", "removal first"])
def test_a_summary_and_a_removal_in_either_order_leave_nothing_of_the_profile(store, removal, order):
    """The orders one writer at a time allows (all SQLite sees): the profile is claimed, then its
    summary is stored before its removal, or after (between mark and purge, or after the purge):
    no error, and neither the upload nor a summary of it is left."""
    session_id = removal.container(store)
    upload = _stored(store, session_id, b"raced profile")
    assert upload.sha256 is not None
    _claim_all(store, 1)
    summary = (upload.id, upload.sha256, b"digest")
    if order == "summary first":
        assert store.metadata.store_summaries([summary]) == [True]
        removal.remove(store, session_id, removal.mark(store, session_id, upload.id))
    else:
        marked = removal.mark(store, session_id, upload.id)
        if removal.marks:
            assert store.metadata.store_summaries([summary]) == [False], "a profile marked deleted gets no summary"
        removal.remove(store, session_id, marked)
        assert store.metadata.store_summaries([summary]) == [False], "a removed profile gets no summary"
    assert (_uploads(store, upload.id), _summaries(store, upload.id)) == (0, 0)


def _backends_blocked_by(conn: psycopg.Connection, pid: int) -> list[int]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)).fetchall()
    return [int(row[0]) for row in rows]


def _wait_for(what: str, found: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not found():
        assert time.monotonic() < deadline, f"waited {DEADLINE_SECONDS:g} s for {what}"
        time.sleep(0.005)


class _Run(threading.Thread):
    """``call`` on a thread of its own; what it returned or raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # the test reports it
            self.error = exc

    def outcome(self) -> object:
        self.join(DEADLINE_SECONDS)
        assert not self.is_alive(), "it did not end"
        if self.error is not None:
            raise self.error
        return self.result


def _held_then_raced(
    url: str, held: tuple[str, tuple[object, ...]], first: Callable[[], object], second: Callable[[], object]
) -> tuple[object, object]:
    """What ``first`` and ``second`` return when ``first`` runs into a row lock a second connection
    holds (``held``: its SELECT ... FOR UPDATE), and ``second`` starts then; the lock is given back
    once ``second`` waits for ``first`` (or has ended). Without sleeps: ``pg_blocking_pids`` tells."""
    with psycopg.connect(url, autocommit=True) as watch, psycopg.connect(url) as holder:
        holder.execute(*held)
        holder_pid = holder.info.backend_pid
        one = _Run(first)
        one.start()
        try:
            _wait_for("the first to wait for the held lock", lambda: _backends_blocked_by(watch, holder_pid))
            [one_pid] = _backends_blocked_by(watch, holder_pid)
            two = _Run(second)
            two.start()
            _wait_for(
                "the second to wait for the first, or end",
                lambda: not two.is_alive() or bool(_backends_blocked_by(watch, one_pid)),
            )
        finally:
            holder.rollback()
        return one.outcome(), two.outcome()


def _ingest_of_two_raced(
    store: Store, url: str, session_id: str, race: Callable[[], object]
) -> tuple[UploadRecord, UploadRecord, object, object]:
    """Two profiles of ``session_id``, ``first`` and ``later`` by id, the later one stored first (so
    a scan finds it first), and a third of another dataset between them: the ingest writes the three
    in id order, has updated ``first`` and waits (a held lock) for the one between, and ``race``
    starts then. Returns ``first``, ``later``, what the ingest stored and what ``race`` returned."""
    other_container = store.dataset_container("org-1", "model-2").id
    later = _stored(store, session_id, b"later")
    tries = 0
    while (first := _stored(store, session_id, b"first %d" % tries)).id > later.id:
        tries += 1
    tries = 0
    while not (first.id < (between := _stored(store, other_container, b"between %d" % tries)).id < later.id):
        tries += 1
    batch = [first, between, later]
    store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=50)
    stored, raced = _held_then_raced(
        url,
        ("SELECT id FROM uploads WHERE id = %s FOR UPDATE", (between.id,)),
        lambda: store.metadata.store_summaries([(u.id, u.sha256, b"digest") for u in batch]),
        race,
    )
    return first, later, stored, raced


@pytest.mark.parametrize("removal", REMOVALS, ids=lambda r: r.name)
def test_a_removal_meeting_an_ingest_between_its_summary_and_its_commit_is_no_error(
    postgres_service, tmp_path, removal
):
    """PostgreSQL: the ingest has updated the raced profile's row and inserted its summary, and waits
    (before its commit) for another profile of its batch; the removal starts then. It waits for the
    ingest's commit and removes the summary with the upload, or the ingest stores nothing for a
    profile marked deleted; neither side fails (it broke ``summaries_upload_id_fkey``)."""
    url = postgres_service.new_schema()
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    try:
        session_id = removal.container(store)
        # the other profile of the ingest's batch: in a dataset (no retention, no guest deletion) and
        # written after the raced one (the ingest writes in id order)
        other_container = store.dataset_container("org-1", "model-2").id
        raced = _stored(store, session_id, b"raced profile")
        tries = 0
        while (other := _stored(store, other_container, b"other profile %d" % tries)).id < raced.id:
            tries += 1
        assert raced.sha256 is not None and other.sha256 is not None
        store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=8)
        marked = removal.mark(store, session_id, raced.id)
        with psycopg.connect(url, autocommit=True) as watch, psycopg.connect(url) as holder:
            holder.execute("SELECT id FROM uploads WHERE id = %s FOR UPDATE", (other.id,))
            holder_pid = holder.info.backend_pid
            ingest = _Run(
                lambda: store.metadata.store_summaries(
                    [(raced.id, raced.sha256, b"raced digest"), (other.id, other.sha256, b"other digest")]
                )
            )
            ingest.start()
            try:
                _wait_for("the ingest to wait for the other profile", lambda: _backends_blocked_by(watch, holder_pid))
                [ingest_pid] = _backends_blocked_by(watch, holder_pid)
                removing = _Run(lambda: removal.remove(store, session_id, marked))
                removing.start()
                _wait_for(
                    "the removal to wait for the ingest or end",
                    lambda: not removing.is_alive() or bool(_backends_blocked_by(watch, ingest_pid)),
                )
            finally:
                holder.rollback()  # the ingest goes on, then the removal
            stored = ingest.outcome()
            removing.outcome()
        assert stored == [not removal.marks, True], "a profile marked deleted gets no summary"
        assert (_uploads(store, raced.id), _summaries(store, raced.id)) == (0, 0), "nothing of it is left"
        assert (_uploads(store, other.id), _summaries(store, other.id)) == (1, 1), "the other one is summarised"
    finally:
        store.close()


def test_marking_a_session_deleted_while_the_ingest_writes_two_of_its_profiles_is_no_deadlock(
    postgres_service, tmp_path
):
    """PostgreSQL: the ingest writes a batch in id order and has updated the first of two profiles of
    a session, waiting (a held lock) for a profile of another batch-mate between them; the session's
    deletion marks its uploads meanwhile. The mark took the rows in the order it found them (the
    second profile first) and the two deadlocked, one of them failing; it now locks them in id order
    too, so it waits for the ingest, and marks them once it committed."""
    url = postgres_service.new_schema()
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    try:
        session_id = store.create_session("u").id
        first, later, stored, marked = _ingest_of_two_raced(
            store, url, session_id, lambda: deletions(store).mark_session_deleted(session_id)
        )
        assert stored == [True, True, True], "the ingest committed first"
        assert marked is True
        assert store.get_upload(first.id) is None and store.get_upload(later.id) is None
    finally:
        store.close()


def test_moving_a_transaction_s_uploads_while_the_ingest_writes_two_of_them_is_no_deadlock(postgres_service, tmp_path):
    """PostgreSQL: the ingest writes a batch in id order and has updated the first of two profiles of
    a transaction, waiting (a held lock) for a profile of another batch-mate between them; the
    transaction's commit moves its uploads into the dataset meanwhile. The move updated the rows in
    the order it found them (the second profile first) and the two deadlocked, one of them failing; it
    now locks them in id order too, so it waits for the ingest, and moves them once it committed."""
    url = postgres_service.new_schema()
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    try:
        transaction = store.create_session("u").id
        dataset = store.dataset_container("org-1", "model-1").id
        first, later, stored, moved = _ingest_of_two_raced(
            store, url, transaction, lambda: store.move_stored_uploads(transaction, dataset)
        )
        assert stored == [True, True, True], "the ingest committed first"
        # every stored profile of the transaction moved (the helper's tries at an id order land there too)
        in_dataset = store.list_profiles(dataset)
        assert sorted(cast(list[str], moved)) == sorted(u.id for u in in_dataset)
        assert {first.id, later.id} <= set(cast(list[str], moved))
        assert {u.session_id for u in in_dataset} == {dataset} and store.list_profiles(transaction) == []
        assert [_summaries(store, u.id) for u in (first, later)] == [1, 1]
    finally:
        store.close()


def test_a_rollup_s_writes_and_the_session_s_deletion_take_turns(postgres_service, tmp_path):
    """PostgreSQL: a rollup's transaction has written an hour's row and waits (a held lock) before
    its day's; the session's deletion starts then. The deletion deleted the session's derived rows
    in key order (the day's first) and waited for the hour's, the rollup then waited for the day's:
    a deadlock, one of them failing (the deletion a 500). The deletion now waits for the rollup's
    lock on the session's row, and removes what it wrote once it committed."""
    url = postgres_service.new_schema()
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    try:
        session_id = store.create_session("u").id
        day, hour, other = "timeline/r/day/0/*", "timeline/r/hour/0/*", "timeline/x/held"
        for key in (day, hour, other):
            store.metadata.put_derived(session_id, key, b"before")
        _, deleted = _held_then_raced(
            url,
            ("SELECT key FROM derived WHERE session_id = %s AND key = %s FOR UPDATE", (session_id, other)),
            lambda: store.metadata.write_derived(
                session_id, [("put", hour, b"after"), ("put", other, b"after"), ("put", day, b"after")]
            ),
            lambda: deletions(store).mark_session_deleted(session_id),
        )
        assert deleted is True
        assert [store.metadata.get_derived(session_id, key) for key in (day, hour, other)] == [None, None, None]
        store.metadata.write_derived(session_id, [("put", day, b"later")])  # a deleted session keeps nothing
        assert store.metadata.get_derived(session_id, day) is None
    finally:
        store.close()


@pytest.mark.parametrize("step", ["marked", "purged"])
def test_a_write_to_a_session_or_dataset_deleted_after_it_was_found_raises_session_gone(store, step):
    """A route finds the session (or dataset), then a deletion marks it, or purges it, before the
    route writes (upload slots, a setting, a transaction's commit into the dataset): the write
    raises SessionGoneError and writes nothing (after a purge it broke the foreign key, an error
    of the database)."""
    session_id = store.create_session("u").id
    container_id = store.dataset_container("org-1", "model-1").id
    moving = _stored(store, store.dataset_container("org-1", "model-3/transaction/t2").id, b"moving")
    assert deletions(store).mark_session_deleted(session_id)
    assert deletions(store).mark_dataset_deleted("org-1", "model-1")
    if step == "purged":
        _purged(store, deletions(store).claim_purges(lease_ms=LEASE_MS, limit=10))
    with pytest.raises(SessionGoneError):
        store.create_upload(session_id, "batch", ttl_seconds=600, dataset_timestamp=TS)
    with pytest.raises(SessionGoneError):
        store.create_upload(container_id, "batch", ttl_seconds=600, dataset_timestamp=TS)
    with pytest.raises(SessionGoneError):
        store.put_setting(container_id, "weights", "{}")
    with pytest.raises(SessionGoneError):  # a transaction's commit
        store.metadata.move_stored_uploads(moving.session_id, container_id)
    assert store.get_upload(moving.id).session_id == moving.session_id, "nothing moved"
    written = store.metadata._query(
        "SELECT (SELECT COUNT(*) FROM uploads WHERE session_id IN (?, ?))"
        " + (SELECT COUNT(*) FROM dataset_settings WHERE session_id = ?) AS n",
        (session_id, container_id, container_id),
    )
    assert written[0]["n"] == 0


def test_a_slot_asked_for_while_its_session_is_deleted_answers_404_saying_what_to_do(server, monkeypatch):
    """Over HTTP: the route found the session just before a deletion removed it (its lookup is made
    to answer as it did then); the slot request answers 404 with what to do, not 500."""
    url = server.url
    session_id = requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=30).json()["id"]
    found = server.store.guest_session(session_id)
    assert found is not None
    assert requests.delete(f"{url}/v0/sessions/{session_id}", timeout=30).ok
    monkeypatch.setattr(server.store, "guest_session", lambda _: found)
    answer = requests.post(f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=30)
    assert (answer.status_code, answer.json()) == (404, {"message": SESSION_GONE_MESSAGE})


def test_slots_asked_for_at_once_within_limits_do_not_deadlock_on_their_session(postgres_service, tmp_path):
    """PostgreSQL: a slot request counted against the session's limits locks the session's row for
    update at once. Another request holding a key-share lock on it (the first lock of a write that
    checks the session is live) and then asking to upgrade it goes first; had this one taken a
    key-share lock before its own upgrade, each would wait for the other (a deadlock)."""
    url = postgres_service.new_schema()
    store = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    try:
        session_id = store.create_session("u").id
        with psycopg.connect(url, autocommit=True) as watch, psycopg.connect(url) as other:
            other.execute("SELECT id FROM sessions WHERE id = %s FOR KEY SHARE", (session_id,))
            other_pid = other.info.backend_pid
            asking = _Run(
                lambda: store.create_uploads(
                    session_id, [NewUpload("batch", TS)], ttl_seconds=600, max_open=10, max_profiles=10
                )
            )
            asking.start()
            try:
                _wait_for("the slot request to wait for the other one", lambda: _backends_blocked_by(watch, other_pid))
                other.execute("SET LOCAL lock_timeout = '10s'")
                other.execute("SELECT id FROM sessions WHERE id = %s FOR UPDATE", (session_id,))
            finally:
                other.rollback()
            [slot] = asking.outcome()
        assert store.get_upload(slot.id) is not None
    finally:
        store.close()
