"""An idle ingest worker sleeps (issue 27): its looks at the store back off to a third of the claim
lease, a wake brings them back to the first pace, and a worker that cannot keep up tells the other
hosts. The real embedded store, a fake sandbox, the worker's waits recorded instead of waited."""

from __future__ import annotations

import threading
import time

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import ingest
from whylogs_songbird.server.ingest import IngestWorker, heartbeat_of
from whylogs_songbird.server.sandbox import SandboxError
from whylogs_songbird.server.store import NewUpload, Store

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py"), pytest.mark.hang_bound]

PROFILE = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01c\x12\x00"


class Sandbox:
    """Answers a digest for each profile."""

    def digest(self, data: bytes, checked: object = None) -> bytes:
        return b"digest"

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
        return [b"digest"] * len(profiles)

    def close(self) -> None:
        return None


class ScriptedWake(threading.Event):
    """The worker's wake: each wait is recorded and answers the next of ``woken`` (then stops the worker)."""

    def __init__(self, worker: IngestWorker, woken: list[bool], on_wait=None) -> None:
        super().__init__()
        self.worker, self.woken, self.on_wait = worker, list(woken), on_wait
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.on_wait is not None:
            self.on_wait(len(self.waits))
        if not self.woken:
            self.worker._stop.set()
            return False
        return self.woken.pop(0)


def idle_waits(store: Store, woken: list[bool], *, lease_ms: int = 30_000, on_wait=None) -> list[float | None]:
    worker = IngestWorker(store, sandbox=Sandbox())
    heartbeat_of(store).lease_ms = lease_ms
    worker._wake = ScriptedWake(worker, woken, on_wait)
    worker._run()
    return worker._wake.waits


def test_an_idle_worker_looks_ever_less_often_up_to_a_third_of_the_lease(store, monkeypatch):
    monkeypatch.setattr(ingest, "GATHER_SECONDS", 0.0)
    assert ingest.IDLE_POLL_MAX_SECONDS == 10.0
    assert idle_waits(store, [False] * 6) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    # a short lease: dead hosts' claims are taken over soon after it ends
    assert idle_waits(store, [False] * 3, lease_ms=3_000) == [1.0, 1.0, 1.0, 1.0]


def test_a_wake_brings_the_first_pace_back_and_work_found_too(store, monkeypatch):
    monkeypatch.setattr(ingest, "GATHER_SECONDS", 0.0)
    assert idle_waits(store, [False, False, True, False]) == [1.0, 2.0, 4.0, 1.0, 2.0]

    def put_at_third_wait(count: int) -> None:
        if count == 3:  # work another process left, found at the next look without a wake
            session_id = store.create_session("u").id
            upload = store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)[0]
            store_profile_bytes(store, upload.id, PROFILE)

    assert idle_waits(store, [False, False, False, False], on_wait=put_at_third_wait) == [1.0, 2.0, 4.0, 1.0, 2.0]
    assert store.metadata.pending_ingest() == 0


class Announcements:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self) -> None:
        self.threads.append(threading.current_thread().name)


def test_a_busy_worker_announces_work_to_the_other_hosts_off_the_caller_s_thread(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    worker = IngestWorker(store, sandbox=Sandbox())
    worker._working = 1  # its one thread is summarising
    worker.wake()
    assert announced.threads == [], "no other process listens to an embedded store"
    worker._unlisten = lambda: None  # as on PostgreSQL
    worker._working = 0
    worker.wake()
    assert announced.threads == [], "an idle worker takes the work itself"
    worker._working = 1
    worker.wake()
    worker.wake()  # at once again: one announcement is enough
    wait_for(lambda: len(announced.threads) == 1)
    assert announced.threads == ["songbird-ingest-announce"]  # never on an upload route's event loop
    worker._announced -= ingest.ANNOUNCE_SECONDS
    worker.wake()
    wait_for(lambda: len(announced.threads) == 2)


class FixedClock:
    """The module's ``time``: ``monotonic`` reads what the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_the_first_announcement_goes_out_however_young_the_clock_then_one_per_interval(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    clock = FixedClock(0.05)  # a host whose monotonic clock started a moment ago (a fresh container)
    monkeypatch.setattr(ingest, "time", clock)
    worker = IngestWorker(store, sandbox=Sandbox())
    worker.announce()
    assert len(announced.threads) == 1, "the first announcement is never held back"
    clock.now += ingest.ANNOUNCE_SECONDS / 2
    worker.announce()
    assert len(announced.threads) == 1, "at most one per interval"
    clock.now = 0.05 + 2 * ingest.ANNOUNCE_SECONDS
    worker.announce()
    assert len(announced.threads) == 2


def wait_for(condition) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_full_batch_is_announced(store, monkeypatch):
    announced = Announcements()
    monkeypatch.setattr(store.metadata, "announce_ingest", announced)
    monkeypatch.setattr(ingest, "GATHER_SECONDS", 0.0)
    session_id = store.create_session("u").id
    uploads = store.create_uploads(session_id, [NewUpload("reference")] * (ingest.INGEST_BATCH + 1), ttl_seconds=900)
    for upload in uploads:
        store_profile_bytes(store, upload.id, PROFILE + upload.id.encode())
    assert idle_waits(store, []) == [1.0]
    assert len(announced.threads) == 1, "eight claimed: maybe more wait, idle hosts help"
    assert store.metadata.pending_ingest() == 0
