"""The ingest worker's batch verdicts, its busy count and its word to the other hosts
(whylogs_songbird/server/ingest.py), on the real embedded store with a fake sandbox.

A batch changes each session's timeline version once, before any of its verdicts shows; a store
failure on one verdict or on the batch's summaries is logged and costs no try. A wake is announced
to the other hosts only while every thread summarises, at most every ``ANNOUNCE_SECONDS``, on a
daemon thread of its own when the caller is an upload route; the store's announcements wake the
worker, and stopping stops listening once. No server process and no real waiting: the worker's
loop runs on the test's thread, its idle wait stops it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import ingest
from whylogs_songbird.server.ingest import LEASE_MS, IngestWorker, ingest_many, ingest_one
from whylogs_songbird.server.rollups import read_version
from whylogs_songbird.server.sandbox import SandboxCrash, SandboxError, SandboxRefused
from whylogs_songbird.server.store import NewUpload, Store, UploadRecord

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py"), pytest.mark.hang_bound]

#: a well-formed serialized profile of one column without chunks; a byte appended makes each distinct
PROFILE = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01c\x12\x00"
DIGEST = b"the digest"
LOGGER = "whylogs_songbird.server.ingest"


class Sandbox:
    """Answers what ``outcomes`` says of each profile's bytes (a digest by default); ``during``
    runs at each profile sent alone, before its answer."""

    def __init__(self, outcomes: dict[bytes, bytes | SandboxError] | None = None, during=None) -> None:
        self.outcomes = outcomes or {}
        self.during: Callable[[], None] | None = during
        self.given: list[bytes] = []

    def _outcome(self, data: bytes) -> bytes | SandboxError:
        return self.outcomes.get(data, DIGEST)

    def digest(self, data: bytes, checked: object = None) -> bytes:
        self.given.append(data)
        if self.during is not None:
            self.during()
        outcome = self._outcome(data)
        if isinstance(outcome, SandboxError):
            raise outcome
        return outcome

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
        return [self._outcome(data) for data in profiles]

    def close(self) -> None:
        return None


def put(store: Store, tail: int, session_id: str) -> tuple[UploadRecord, bytes]:
    data = PROFILE + bytes([tail])
    upload = store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)[0]
    return store_profile_bytes(store, upload.id, data), data


def state(store: Store, upload_id: str) -> tuple[str | None, str | None, int]:
    record = store.get_upload(upload_id)
    assert record is not None
    return record.ingest_state, record.ingest_error, record.ingest_tries


def claim_all(store: Store) -> list[UploadRecord]:
    return store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=ingest.INGEST_BATCH)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


# -- a batch's verdicts --------------------------------------------------------------------------------


def test_a_batch_changes_each_session_s_version_once_before_its_verdicts_show(store, monkeypatch):
    first, other = store.create_session("user").id, store.create_session("user").id
    (good, good_data), (torn, torn_data), (crashed, crashed_data) = (put(store, i, first) for i in range(3))
    other_crashed, other_data = put(store, 3, other)
    sandbox = Sandbox(
        {
            torn_data: SandboxRefused("its KLL sketch is torn"),
            crashed_data: SandboxCrash("the child died of SIGSEGV"),
            other_data: SandboxCrash("the child died of SIGSEGV"),
        }
    )
    changed: list[tuple[str, list[str | None]]] = []  # (session, its profiles' states at the change)
    real = ingest.summary_changing

    def summary_changing(s: Store, upload: UploadRecord) -> None:
        changed.append((upload.session_id, [state(s, u.id)[0] for u in (good, torn)]))
        real(s, upload)

    monkeypatch.setattr(ingest, "summary_changing", summary_changing)
    recorded = {session_id: read_version(store, session_id) for session_id in (first, other)}
    assert "" not in recorded.values(), "recording a profile changed its session's version already"
    claimed = claim_all(store)
    answers = dict(zip([u.id for u in claimed], ingest_many(store, claimed, sandbox)))
    assert answers == {good.id: DIGEST, torn.id: None, crashed.id: None, other_crashed.id: None}
    # once for the session with a summary and a refusal, before either shows; never for crashes alone
    assert changed == [(first, ["pending", "pending"])]
    assert read_version(store, first) not in ("", recorded[first]) and read_version(store, other) == recorded[other]
    assert state(store, good.id) == ("ready", None, 0)
    assert state(store, torn.id) == ("invalid", "its KLL sketch is torn", 0)
    assert state(store, crashed.id) == ("pending", "the child died of SIGSEGV", 1)
    assert state(store, other_crashed.id) == ("pending", "the child died of SIGSEGV", 1)


def test_one_verdict_the_store_fails_on_is_logged_and_the_others_are_recorded(store, monkeypatch, caplog):
    session_id = store.create_session("user").id
    first_data, second_data = put(store, 0, session_id)[1], put(store, 1, session_id)[1]
    sandbox = Sandbox({first_data: SandboxRefused("torn"), second_data: SandboxRefused("torn")})
    claimed = claim_all(store)
    failing = claimed[0].id
    real = store.mark_invalid

    def mark_invalid(upload_id: str, sha256: str, reason: str) -> bool:
        if upload_id == failing:
            raise RuntimeError("database is locked")
        return real(upload_id, sha256, reason)

    monkeypatch.setattr(store, "mark_invalid", mark_invalid)
    assert ingest_many(store, claimed, sandbox) == [None, None]
    kept = claimed[1].id
    assert state(store, kept) == ("invalid", "torn", 0) and state(store, failing) == ("pending", None, 0)
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"ingest: upload {failing} failed"] and errors[0].exc_info


def test_summaries_the_store_fails_to_keep_are_logged_and_none_is_answered(store, monkeypatch, caplog):
    session_id = store.create_session("user").id
    first, second = put(store, 0, session_id)[0], put(store, 1, session_id)[0]

    def store_summaries(summaries: list[tuple[str, str, bytes]]) -> list[bool]:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store, "store_summaries", store_summaries)
    assert ingest_many(store, claim_all(store), Sandbox()) == [None, None]
    assert state(store, first.id) == ("pending", None, 0) and state(store, second.id) == ("pending", None, 0)
    assert messages(caplog) == [(logging.ERROR, "ingest: storing 2 summaries failed")]


def test_the_batch_s_summaries_are_stored_in_one_call_and_none_when_there_are_none(store, monkeypatch):
    session_id = store.create_session("user").id
    (good, _), (torn, torn_data) = put(store, 0, session_id), put(store, 1, session_id)
    calls: list[list[tuple[str, str, bytes]]] = []
    real = store.store_summaries

    def store_summaries(summaries: list[tuple[str, str, bytes]]) -> list[bool]:
        calls.append(list(summaries))
        return real(summaries)

    monkeypatch.setattr(store, "store_summaries", store_summaries)
    sandbox = Sandbox({torn_data: SandboxRefused("torn")})
    claimed = claim_all(store)
    assert dict(zip([u.id for u in claimed], ingest_many(store, claimed, sandbox))) == {good.id: DIGEST, torn.id: None}
    assert calls == [[(good.id, good.sha256, DIGEST)]]
    (refused, refused_data) = put(store, 2, session_id)
    (also, also_data) = put(store, 3, session_id)
    sandbox = Sandbox({refused_data: SandboxRefused("torn"), also_data: SandboxRefused("torn")})
    assert ingest_many(store, claim_all(store), sandbox) == [None, None]
    assert len(calls) == 1, "a batch with no summary opens no transaction to store them"
    assert state(store, refused.id)[0] == state(store, also.id)[0] == "invalid" == state(store, torn.id)[0]


def test_unreadable_bytes_change_the_session_s_version_as_they_make_the_profile_invalid(store, caplog):
    session_id = store.create_session("user").id
    upload = put(store, 0, session_id)[0]
    (claimed,) = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=1)
    store.blobs.delete(claimed.path)
    assert ingest_one(store, claimed, Sandbox()) is None
    assert state(store, upload.id) == ("invalid", "its stored bytes cannot be read (FileNotFoundError)", 0)
    assert read_version(store, session_id) != ""  # a view made before is out of date
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- the busy count and the announcements ----------------------------------------------------------------


class Announcements:
    """The store's ``announce_ingest``: records the thread of each announcement."""

    def __init__(self, fails: bool = False) -> None:
        self.threads: list[tuple[str, bool]] = []
        self.fails = fails

    def __call__(self) -> None:
        current = threading.current_thread()
        self.threads.append((current.name, current.daemon))
        if self.fails:
            raise OSError("the database went away")


def announced_by(action: Callable[[], Any], announced: Announcements) -> int:
    """How many announcements were made once ``action`` and the announce threads it started ended."""
    action()
    for thread in threading.enumerate():
        if thread.name == "songbird-ingest-announce":
            thread.join(20)
    return len(announced.threads)


class StopOnIdle(threading.Event):
    """The worker's wake: its first idle wait stops the worker (no real waiting)."""

    def __init__(self, worker: IngestWorker) -> None:
        super().__init__()
        self.worker = worker

    def wait(self, timeout: float | None = None) -> bool:
        self.worker._stop.set()
        return False


def listening_worker(store: Store, sandbox: Sandbox, monkeypatch, *, concurrency: int = 1) -> IngestWorker:
    """A worker of a store other hosts listen to (as on PostgreSQL), announcing without a pause."""
    monkeypatch.setattr(ingest, "ANNOUNCE_SECONDS", 0.0)
    worker = IngestWorker(store, sandbox=sandbox, concurrency=concurrency)
    worker._unlisten = lambda: None
    worker._wake = StopOnIdle(worker)
    return worker


def test_a_wake_is_announced_while_the_only_thread_summarises_and_not_before_or_after(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    monkeypatch.setattr(ingest, "BATCH_BYTES", 1)  # one profile a claim: two batches in a row
    session_id = store.create_session("user").id
    first, second = put(store, 0, session_id)[0], put(store, 1, session_id)[0]
    during: list[int] = []
    sandbox = Sandbox()
    worker = listening_worker(store, sandbox, monkeypatch)
    sandbox.during = lambda: during.append(announced_by(worker.wake, announced))
    assert announced_by(worker.wake, announced) == 0, "a new worker is idle: it takes the work itself"
    worker._run()
    assert during == [1, 2]  # each batch: its one thread is busy
    assert announced_by(worker.wake, announced) == 2, "idle again after both"
    assert state(store, first.id)[0] == state(store, second.id)[0] == "ready"


def test_with_two_threads_a_wake_is_announced_only_while_both_summarise(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    upload = put(store, 0, store.create_session("user").id)[0]
    during: list[int] = []
    sandbox = Sandbox()
    worker = listening_worker(store, sandbox, monkeypatch, concurrency=2)
    sandbox.during = lambda: during.append(announced_by(worker.wake, announced))
    worker._working = 1  # the other thread is summarising
    assert announced_by(worker.wake, announced) == 0
    worker._run()
    assert during == [1] and state(store, upload.id)[0] == "ready"
    assert announced_by(worker.wake, announced) == 1, "one of two threads is free again"


class ReadClock:
    """The module's ``time``: ``monotonic`` reads the next of ``readings``."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def monotonic(self) -> float:
        return self.readings.pop(0)


def test_announcements_are_at_least_announce_seconds_apart_and_made_on_the_caller_s_thread(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    monkeypatch.setattr(ingest, "ANNOUNCE_SECONDS", 0.25)  # a power of two: the boundary is exact
    monkeypatch.setattr(ingest, "time", ReadClock(1.0, 1.125, 1.25, 1.375, 1.4375, 1.5))
    worker = IngestWorker(store, sandbox=Sandbox())
    counts = []
    for _ in range(6):
        worker.announce()
        counts.append(len(announced.threads))
    # the first at once; then 0.125 and 0.1875 s after one: none; exactly 0.25 s after: one
    assert counts == [1, 1, 2, 2, 2, 3]
    here = threading.current_thread()
    assert announced.threads == [(here.name, here.daemon)] * 3


def test_an_announcement_off_the_caller_s_thread_is_made_on_a_daemon_thread(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    worker = IngestWorker(store, sandbox=Sandbox())
    assert not threading.current_thread().daemon
    assert announced_by(lambda: worker.announce(in_thread=True), announced) == 1
    assert announced.threads == [("songbird-ingest-announce", True)]  # never holds up the server's exit


def test_a_failed_announcement_is_logged_by_its_kind(store, monkeypatch, caplog):
    monkeypatch.setattr(store.metadata, "announce_ingest", Announcements(fails=True))
    IngestWorker(store, sandbox=Sandbox()).announce()
    assert messages(caplog) == [(logging.WARNING, "ingest: announcing work failed (OSError)")]


# -- listening for the other hosts' announcements --------------------------------------------------------


def test_the_other_hosts_announcements_wake_the_worker_until_it_stops_listening(store, monkeypatch):
    heard: list[Callable[[], None]] = []
    stopped: list[int] = []

    def listen_ingest(callback: Callable[[], None]) -> Callable[[], None]:
        heard.append(callback)
        return lambda: stopped.append(1)

    monkeypatch.setattr(store.metadata, "listen_ingest", listen_ingest)
    worker = IngestWorker(store, sandbox=Sandbox(), concurrency=0)  # the look thread only
    worker.start()
    try:
        assert len(heard) == 1
        assert not worker._wake.is_set()
        heard[0]()  # another host announced work
        assert worker._wake.is_set()
    finally:
        worker.stop()
    assert stopped == [1]
    worker.stop()  # stopping again stops listening no more
    assert stopped == [1]


def test_a_store_that_cannot_be_listened_to_is_polled(store, monkeypatch, caplog):
    def listen_ingest(callback: Callable[[], None]) -> Callable[[], None]:
        raise RuntimeError("no connection")

    announced = Announcements()
    monkeypatch.setattr(store.metadata, "listen_ingest", listen_ingest)
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    worker = IngestWorker(store, sandbox=Sandbox(), concurrency=0)
    worker.start()
    try:
        assert messages(caplog) == [(logging.ERROR, "ingest: listening for other hosts' work failed; polling instead")]
        assert announced_by(worker.wake, announced) == 0, "no one is told when no one listens"
    finally:
        worker.stop()


# -- stopping with claimed profiles --------------------------------------------------------------------


def test_a_stopped_worker_gives_back_the_profiles_it_claimed_and_did_not_start(store, monkeypatch):
    session_id = store.create_session("user").id
    first, second = put(store, 0, session_id)[0], put(store, 1, session_id)[0]
    sandbox = Sandbox()
    worker = IngestWorker(store, sandbox=sandbox)
    real = store.metadata.claim_ingest
    claims: list[list[str]] = []

    def claim_ingest(**kwargs: Any) -> list[UploadRecord]:
        worker._stop.set()  # the server stops while this claim is made
        claimed = real(**kwargs)
        claims.append(sorted(u.id for u in claimed))
        return claimed

    monkeypatch.setattr(store.metadata, "claim_ingest", claim_ingest)
    worker._run()
    assert claims == [sorted([first.id, second.id])] and sandbox.given == []
    for upload in (first, second):  # pending, no try counted, the claim ended: any worker takes it now
        assert state(store, upload.id) == ("pending", None, 0)
        assert store.get_upload(upload.id).ingest_lease is None
