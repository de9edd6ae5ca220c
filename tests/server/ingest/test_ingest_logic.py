"""The ingest worker (whylogs_songbird/server/ingest.py) on the real embedded store, with a fake sandbox.

The sandbox is the module's seam: a fake one answers a digest, refuses, crashes or is stopped, as
the test tells it. Every outcome is read back from the real SQLite store: the profile's state,
its reason, its tries and its summary. The worker loop is run on the test's own thread where a
test needs to see one step (its clock and its waits replaced), and on its threads otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_profile_bytes
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import ingest
from whylogs_songbird.server.digest import digest_from_bytes
from whylogs_songbird.server.ingest import BUSY_SHARE, LEASE_MS, IngestWorker, ingest_one
from whylogs_songbird.server.rollups import read_version, store_rollups
from whylogs_songbird.server.sandbox import SandboxCrash, SandboxError, SandboxRefused, SandboxStopped
from whylogs_songbird.server.store import NewUpload, Store, UploadRecord

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py"), pytest.mark.hang_bound]

#: a well-formed serialized profile of one column without chunks (17 bytes)
PROFILE = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01c\x12\x00"
OTHER = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01d\x12\x00"
DIGEST = b"the digest"


class FakeSandbox:
    """Answers ``outcome`` (bytes) or raises it (an exception), recording what it was given."""

    def __init__(self, outcome: bytes | Exception | Callable[[bytes], bytes] = DIGEST) -> None:
        self.outcome = outcome
        self.given: list[bytes] = []
        self.closed = 0

    def digest(self, data: bytes, checked: object = None) -> bytes:
        self.given.append(data)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        if callable(self.outcome):
            return self.outcome(data)
        return self.outcome

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
        """None for each: not reached, so each goes alone to :meth:`digest` (as after a crash)."""
        return [None] * len(profiles)

    def close(self) -> None:
        self.closed += 1


def put(store: Store, data: bytes = PROFILE, session_id: str | None = None) -> UploadRecord:
    session_id = session_id or store.create_session("user").id
    upload = store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)[0]
    return store_profile_bytes(store, upload.id, data)


def in_claim_order(store: Store, uploads: list[UploadRecord]) -> list[UploadRecord]:
    """The order the store claims work in: oldest first, ties (puts in one millisecond) by id."""
    return sorted(uploads, key=lambda u: (store.get_upload(u.id).stored_at, u.id))


def claim(store: Store) -> UploadRecord:
    (claimed,) = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=1)
    return claimed


def state(store: Store, upload_id: str) -> tuple[str | None, str | None, int]:
    record = store.get_upload(upload_id)
    assert record is not None
    return record.ingest_state, record.ingest_error, record.ingest_tries


def test_the_constants():
    assert LEASE_MS == 30_000 and BUSY_SHARE == 0.25  # a 30-second lease, renewed by the heartbeat
    assert (ingest.POLL_SECONDS, ingest.STOP_GRACE_SECONDS) == (1.0, 5.0)


# -- bytes a PUT of this process checked ---------------------------------------------------------------


class CheckingSandbox(FakeSandbox):
    """A sandbox with its limits (a column cap of 10), recording the ``checked`` each call is given;
    its batch answers each profile, or (``alone``) none, so each then goes alone."""

    limits = SimpleNamespace(max_columns=10)

    def __init__(self, alone: bool) -> None:
        super().__init__()
        self.alone = alone
        self.checked: list[object] = []

    def digest(self, data: bytes, checked: object = None) -> bytes:
        self.checked.append(("alone", checked))
        return super().digest(data, checked)

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
        self.checked.append(("batch", checked))
        return [None] * len(profiles) if self.alone else [DIGEST] * len(profiles)


@pytest.mark.parametrize("alone", [False, True], ids=["one trip", "each alone"])
def test_the_child_is_told_which_bytes_a_put_here_checked_under_its_column_cap(store, alone):
    """Only a profile whose bytes a PUT of this process checked (``Store.checked``) under a cap no
    larger than the sandbox's goes with its sha256, so its child skips the structural check; every
    other one goes with None and is checked in the child."""
    vouched, over_cap = put(store, PROFILE), put(store, OTHER)
    put(store, b"WHY1 not noted")  # no PUT of this process checked it
    store.checked.note(vouched.sha256, 10)
    store.checked.note(over_cap.sha256, 11)  # checked under a larger cap than the sandbox's: no
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=3)
    sandbox = CheckingSandbox(alone)
    assert ingest.ingest_many(store, claimed, sandbox) == [DIGEST] * 3
    expected = [vouched.sha256 if u.id == vouched.id else None for u in claimed]
    alone_calls = [("alone", sha) for sha in expected] if alone else []
    assert sandbox.checked == [("batch", expected), *alone_calls]


def test_a_profile_summarised_alone_tells_the_child_its_bytes_were_checked_here(store):
    vouched = put(store, PROFILE)
    store.checked.note(vouched.sha256, 10)
    sandbox = CheckingSandbox(alone=True)
    assert ingest_one(store, claim(store), sandbox) == DIGEST
    assert sandbox.checked == [("alone", vouched.sha256)]


# -- the claim heartbeat ----------------------------------------------------------------------------


class BeatClock:
    """The module's ``time`` for a heartbeat's beats run on the test's thread: each sleep is
    recorded, then the next step of the test's script runs."""

    def __init__(self, *script: Callable[[], Any]) -> None:
        self.script = list(script)
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.script.pop(0)()


def renewals(store: Store, monkeypatch: pytest.MonkeyPatch, then: Callable[[], Any] = lambda: None) -> list:
    """The store's renewals, recorded (ids sorted, lease) and made; ``then`` runs after each."""
    made: list[tuple[list[str], int]] = []
    real = store.renew_ingest_claims

    def renew_ingest_claims(upload_ids: list[str], *, lease_ms: int) -> set[str]:
        made.append((sorted(upload_ids), lease_ms))
        kept = real(upload_ids, lease_ms=lease_ms)
        then()
        return kept

    monkeypatch.setattr(store, "renew_ingest_claims", renew_ingest_claims)
    return made


def test_the_heartbeat_renews_what_is_held_every_third_of_the_lease_and_says_which_claims_ran_out(
    store, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.ingest")
    a, b = put(store), put(store)
    store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=2)
    heartbeat = ingest.ClaimHeartbeat(store, lease_ms=6000)
    heartbeat._held = {a.id: 1, b.id: 2}
    heartbeat._thread = threading.current_thread()  # the beat runs here: it ends its own thread's record
    clock = BeatClock(
        lambda: None,  # 1: both renewed
        lambda: store.release_ingest_claim(b.id, b.sha256 or "", counted=False),  # 2: b's claim ended: said
        lambda: None,  # 3: b's ended claim is no longer held when the renewal answers: not said
        lambda: heartbeat._held.clear(),  # 4: nothing held: the beat ends
    )
    monkeypatch.setattr(ingest, "time", clock)
    made = renewals(store, monkeypatch, then=lambda: len(clock.script) == 1 and heartbeat._held.pop(b.id))
    assert repr(heartbeat) == "ClaimHeartbeat(lease_ms=6000, held=2)"
    heartbeat._beat()
    assert clock.slept == [2.0] * 4 and heartbeat._thread is None
    assert made == [(sorted([a.id, b.id]), 6000), (sorted([a.id, b.id]), 6000), (sorted([a.id, b.id]), 6000)]
    assert [r.getMessage() for r in caplog.records] == [
        "ingest: the claim on 1 profile(s) ran out or ended while summarising"
    ]


def test_a_failed_renewal_is_logged_and_the_next_beat_tries_again(store, monkeypatch, caplog):
    a, b = put(store), put(store)
    heartbeat = ingest.ClaimHeartbeat(store, lease_ms=300)
    heartbeat._held = {a.id: 1, b.id: 1}  # not claimed: a renewal that kept nothing would be said
    calls: list[int] = []

    def renew_ingest_claims(upload_ids: list[str], *, lease_ms: int) -> set[str]:
        calls.append(len(upload_ids))
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store, "renew_ingest_claims", renew_ingest_claims)
    clock = BeatClock(lambda: None, lambda: heartbeat._held.clear())
    monkeypatch.setattr(ingest, "time", clock)
    heartbeat._beat()
    assert clock.slept == [0.1, 0.1] and calls == [2]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "ingest: renewing 2 claim(s) failed (RuntimeError)")
    ]


def test_a_profile_held_twice_stays_held_until_both_end_and_one_beat_thread_runs(store, monkeypatch):
    gate = threading.Event()

    class Gated:
        @staticmethod
        def sleep(seconds: float) -> None:
            assert gate.wait(20)

    monkeypatch.setattr(ingest, "time", Gated)
    heartbeat = ingest.ClaimHeartbeat(store)
    try:
        with heartbeat.hold("u1"):
            thread = heartbeat._thread
            assert thread is not None and thread.name == "songbird-claim-heartbeat" and thread.daemon
            with heartbeat.hold("u1"), heartbeat.hold("u2"):
                assert sorted(heartbeat.held()) == ["u1", "u2"] and heartbeat._thread is thread
                assert repr(heartbeat) == "ClaimHeartbeat(lease_ms=30000, held=2)"
            assert heartbeat.held() == ["u1"]
        assert heartbeat.held() == []
    finally:
        gate.set()
    thread.join(20)
    assert not thread.is_alive() and heartbeat._thread is None  # it saw nothing held, and ended


def test_a_store_has_one_heartbeat_with_the_default_lease(store, tmp_path):
    heartbeat = ingest.heartbeat_of(store)
    assert heartbeat is ingest.heartbeat_of(store) and heartbeat.lease_ms == LEASE_MS and heartbeat.store is store
    other = Store(tmp_path / "other")
    try:
        assert ingest.heartbeat_of(other) is not heartbeat
    finally:
        other.close()


# -- ingest_one -------------------------------------------------------------------------------------


def test_a_good_profile_gets_its_digest_stored(store):
    upload = put(store)
    sandbox = FakeSandbox()
    assert ingest_one(store, claim(store), sandbox) == DIGEST
    assert sandbox.given == [PROFILE]
    assert state(store, upload.id) == ("ready", None, 0)  # no failed try
    assert store.metadata.get_summary(upload.id, hashlib.sha256(PROFILE).hexdigest()) == DIGEST


def test_a_profile_s_claim_is_held_while_the_sandbox_works_on_it(store):
    upload = put(store)
    held: list[list[str]] = []
    ingest_one(store, claim(store), FakeSandbox(lambda data: held.append(ingest.heartbeat_of(store).held()) or DIGEST))
    assert held == [[upload.id]] and ingest.heartbeat_of(store).held() == []


def test_a_summarised_batch_is_merged_into_the_rollups_of_its_hour_and_day(store):
    hour = 1_714_521_600_000 + 3_600_000  # 2024-05-01T01:00:00Z
    session_id = store.create_session("user").id
    slot = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=hour + 5)], ttl_seconds=900)[0]
    upload = store_profile_bytes(store, slot.id, make_profile_bytes(3))
    digest = digest_from_bytes(make_profile_bytes(3))
    assert ingest_one(store, claim(store), FakeSandbox(digest)) == digest
    rolled = store_rollups(store).read(session_id, "hour", hour, "all")
    assert rolled is not None and [m.upload_id for m in rolled.members] == [upload.id]
    assert store_rollups(store).read(session_id, "day", hour - 3_600_000, "all") is not None


def test_a_summary_or_a_refusal_changes_the_session_s_timeline_version_and_a_crash_does_not(store):
    for outcome, changes in ((DIGEST, True), (SandboxRefused("torn"), True), (SandboxCrash("died"), False)):
        upload = put(store)
        before = read_version(store, upload.session_id)
        ingest_one(store, claim(store), FakeSandbox(outcome))
        assert (read_version(store, upload.session_id) != before) == changes, outcome


def test_a_slot_without_bytes_is_left_alone(store):
    session_id = store.create_session("user").id
    slot = store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)[0]
    sandbox = FakeSandbox()
    assert ingest_one(store, slot, sandbox) is None
    assert sandbox.given == []


def test_unreadable_bytes_make_the_profile_invalid(store):
    upload = put(store)
    claimed = claim(store)
    store.blobs.delete(claimed.path)
    sandbox = FakeSandbox()
    assert ingest_one(store, claimed, sandbox) is None
    assert sandbox.given == []
    assert state(store, upload.id) == ("invalid", "its stored bytes cannot be read (FileNotFoundError)", 0)


def test_a_profile_the_sandbox_refuses_is_invalid_with_its_reason(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.ingest")
    upload = put(store)
    assert ingest_one(store, claim(store), FakeSandbox(SandboxRefused("its KLL sketch is torn"))) is None
    assert state(store, upload.id) == ("invalid", "its KLL sketch is torn", 0)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"ingest: upload {upload.id} is not a readable profile: its KLL sketch is torn")
    ]


def test_a_crash_releases_the_claim_counting_the_try_and_keeping_the_note(store, caplog):
    upload = put(store)
    assert ingest_one(store, claim(store), FakeSandbox(SandboxCrash("the child died of SIGSEGV"))) is None
    assert state(store, upload.id) == ("pending", "the child died of SIGSEGV", 1)  # the note, kept while pending
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"ingest: upload {upload.id}: the child died of SIGSEGV (try 1 of 3)")
    ]
    # claimable again at once (the claim ended), and the note is the reason once the tries run out
    ingest_one(store, claim(store), FakeSandbox(SandboxCrash("the child died of SIGSEGV")))
    ingest_one(store, claim(store), FakeSandbox(SandboxCrash("the child hung")))
    assert "try 3 of 3" in caplog.records[-1].getMessage()
    assert store.metadata.claim_ingest(lease_ms=LEASE_MS) == []
    invalid, reason, _ = state(store, upload.id)
    assert invalid == "invalid" and reason is not None and "the child hung" in reason


def test_a_stopped_sandbox_gives_the_try_back(store):
    upload = put(store)
    assert ingest_one(store, claim(store), FakeSandbox(SandboxStopped("closed"))) is None
    assert state(store, upload.id) == ("pending", None, 0)
    assert [u.id for u in store.metadata.claim_ingest(lease_ms=LEASE_MS)] == [upload.id]


def test_a_digest_of_bytes_replaced_meanwhile_is_dropped(store):
    upload = put(store)
    claimed = claim(store)

    def replace_then_answer(data: bytes) -> bytes:
        store_profile_bytes(store, upload.id, OTHER)
        return DIGEST

    assert ingest_one(store, claimed, FakeSandbox(replace_then_answer)) is None
    assert state(store, upload.id)[0] == "pending"
    assert store.metadata.get_summary(upload.id, hashlib.sha256(PROFILE).hexdigest()) is None


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_profiles_summarised_together_get_what_each_would_alone(store):
    """``ingest_many``: one trip to the sandbox for all; each answer is recorded as ``ingest_one``
    records it, and a profile the child did not reach (one before it ended the child) goes alone."""
    data = {put(store, PROFILE + bytes([i])).id: PROFILE + bytes([i]) for i in range(4)}
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=4)
    uploads = in_claim_order(store, claimed)
    assert [u.id for u in claimed] == [u.id for u in uploads] and len(claimed) == 4
    sent = [data[u.id] for u in uploads]

    class Together(FakeSandbox):
        def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
            self.together = list(profiles)
            return [b"first", SandboxRefused("its KLL sketch is torn"), SandboxCrash("the child died"), None]

    sandbox = Together(b"alone")
    assert ingest.ingest_many(store, claimed, sandbox) == [b"first", None, None, b"alone"]
    assert sandbox.together == sent and sandbox.given == [sent[3]]
    assert state(store, uploads[0].id) == ("ready", None, 0)
    assert state(store, uploads[1].id) == ("invalid", "its KLL sketch is torn", 0)
    assert state(store, uploads[2].id) == ("pending", "the child died", 1)  # the try counted, claim released
    assert state(store, uploads[3].id) == ("ready", None, 0)


class OneChild(FakeSandbox):
    """Like a real child: answers profiles in order; ``poison`` kills it (a crash charged to the
    poison), so the profiles after it in a batch are not reached (None)."""

    def __init__(self, poison: bytes) -> None:
        super().__init__()
        self.poison = poison
        self.trips: list[list[bytes]] = []

    def digest(self, data: bytes, checked: object = None) -> bytes:
        self.trips.append([data])
        if data == self.poison:
            raise SandboxCrash("the child died of SIGSEGV")
        return DIGEST

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
        self.trips.append(list(profiles))
        outcomes: list[bytes | SandboxError | None] = [None] * len(profiles)
        for index, data in enumerate(profiles):
            if data == self.poison:
                outcomes[index] = SandboxCrash("the child died of SIGSEGV")
                break
            outcomes[index] = DIGEST
        return outcomes


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_a_profile_that_kills_the_child_in_batches_is_given_up_on_and_its_neighbours_are_not(store, monkeypatch):
    """The worker, until idle: the poison's crash is charged to it alone, three times over; its
    neighbours, answered before it or summarised alone after it, are ready with no try counted."""
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(4)])
    sent = [store.read_profile_bytes(store.get_upload(u.id)) for u in uploads]
    poison = sent[1]
    sandbox = OneChild(poison)
    one_step(store, sandbox, monkeypatch=monkeypatch)
    assert sandbox.trips == [sent, [sent[2]], [sent[3]], [poison], [poison]]
    assert [state(store, u.id)[0::2] for u in uploads] == [("ready", 0), ("invalid", 3), ("ready", 0), ("ready", 0)]
    reason = state(store, uploads[1].id)[1]
    assert reason == "summarising it failed 3 times, so it is not tried again (last time: the child died of SIGSEGV)"


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_profiles_a_stopped_sandbox_did_not_answer_go_back_with_their_tries(store):
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(3)])
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=3)

    class Stopping(FakeSandbox):
        def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
            return [DIGEST, SandboxStopped("closed"), SandboxStopped("closed")]

    sandbox = Stopping()
    assert ingest.ingest_many(store, claimed, sandbox) == [DIGEST, None, None]
    assert sandbox.given == []  # none tried alone: the server is stopping
    assert [state(store, u.id) for u in uploads] == [("ready", None, 0), ("pending", None, 0), ("pending", None, 0)]


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_one_readable_profile_goes_alone_and_claims_are_held_while_a_batch_is_summarised(store):
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(2)])
    held: list[list[str]] = []

    class Recording(FakeSandbox):
        def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
            held.append(sorted(ingest.heartbeat_of(store).held()))
            return [DIGEST] * len(profiles)

    sandbox = Recording()
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=2)
    assert ingest.ingest_many(store, claimed, sandbox) == [DIGEST, DIGEST]
    assert held == [sorted(u.id for u in uploads)] and sandbox.given == []
    single = put(store)
    assert ingest.ingest_many(store, [claim(store)], sandbox) == [DIGEST]
    assert sandbox.given == [PROFILE] and len(held) == 1 and state(store, single.id)[0] == "ready"


def test_when_the_batch_trip_fails_each_profile_goes_alone(store, caplog):
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(2)])
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=2)

    class NoChild(FakeSandbox):
        def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | SandboxError | None]:
            raise SandboxCrash("a sandbox process did not start (it did not greet)")

    sandbox = NoChild()
    assert ingest.ingest_many(store, claimed, sandbox) == [DIGEST, DIGEST]
    assert len(sandbox.given) == 2 and [state(store, u.id) for u in uploads] == [("ready", None, 0)] * 2
    (record,) = caplog.records
    assert record.getMessage() == "ingest: summarising 2 uploads together failed; each goes alone"


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_the_worker_claims_a_few_small_profiles_and_leaves_what_passes_the_byte_budget(store, monkeypatch):
    monkeypatch.setattr(ingest, "BATCH_BYTES", 2 * (len(PROFILE) + 1))
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(5)])  # each 1 byte over
    worker = IngestWorker(store, sandbox=FakeSandbox())
    assert [u.id for u in worker._claim()] == [u.id for u in uploads[:2]]
    held = [store.get_upload(u.id).ingest_lease is not None for u in uploads]
    assert held == [True, True, False, False, False]  # the others are not claimed
    monkeypatch.setattr(ingest, "BATCH_BYTES", 1)
    assert [u.id for u in worker._claim()] == [uploads[2].id]  # one at least, however large
    assert len(store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=5)) == 2


# -- the worker loop, one step at a time --------------------------------------------------------------


class StoppingEvent(threading.Event):
    """An event whose waits are recorded and then stop ``worker``."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.worker: IngestWorker | None = None

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        assert self.worker is not None
        self.worker._stop.set()
        return True


class Clock:
    """The module's ``time``: perf_counter advances by ``step`` at each read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 100.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:  # the claim heartbeat's thread waits for real
        time.sleep(seconds)


def one_step(
    store: Store,
    sandbox: Any,
    *,
    busy: Callable[[], bool] | None = None,
    step: float = 2.0,
    monkeypatch: pytest.MonkeyPatch,
    poll_seconds: float = 1.0,
) -> tuple[IngestWorker, StoppingEvent, list]:
    worker = IngestWorker(store, sandbox=sandbox, busy=busy, poll_seconds=poll_seconds)
    stop_waits: list[float | None] = []
    real_stop = worker._stop

    class RecordingStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            stop_waits.append(timeout)
            self.set()
            return True

    worker._stop = RecordingStop()
    del real_stop
    wake = StoppingEvent()
    wake.worker = worker
    worker._wake = wake
    monkeypatch.setattr(ingest, "time", Clock(step))
    worker._run()
    return worker, wake, stop_waits


def test_under_load_the_worker_waits_three_times_what_a_profile_took(store, monkeypatch):
    upload = put(store)
    _, wake, stop_waits = one_step(store, FakeSandbox(), busy=lambda: True, step=2.0, monkeypatch=monkeypatch)
    assert state(store, upload.id)[0] == "ready"
    assert stop_waits == [pytest.approx(6.0)]  # took 2 s: summarising gets a quarter of the time
    assert wake.waits == []


def test_batches_summarised_before_a_stop_are_rolled_up_as_the_worker_ends(store, monkeypatch):
    """Stopped while it yields (under load), the worker leaves no summarised batch out of its rollups."""
    hour = 1_714_521_600_000  # 2024-05-01T00:00:00Z
    session_id = store.create_session("user").id
    slot = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=hour + 5)], ttl_seconds=900)[0]
    store_profile_bytes(store, slot.id, make_profile_bytes(3))
    digest = digest_from_bytes(make_profile_bytes(3))
    _, wake, stop_waits = one_step(store, FakeSandbox(digest), busy=lambda: True, monkeypatch=monkeypatch)
    assert len(stop_waits) == 1 and wake.waits == []  # ended in its yield, never idle
    rolled = store_rollups(store).read(session_id, "hour", hour, "all")
    assert rolled is not None and [m.upload_id for m in rolled.members] == [slot.id]


def stamped_batches(store: Store, count: int) -> tuple[str, bytes]:
    """``count`` stored batch profiles of one session, in hour 0 of 2024-05-01; the session and their digest."""
    session_id = store.create_session("user").id
    new = [NewUpload("batch", dataset_timestamp=1_714_521_600_000 + i) for i in range(count)]
    for slot in store.create_uploads(session_id, new, ttl_seconds=900):
        store_profile_bytes(store, slot.id, make_profile_bytes(3))
    return session_id, digest_from_bytes(make_profile_bytes(3))


def rolled_up(store: Store, session_id: str) -> int:
    """How many batches the session's hour-0 rollup holds."""
    found = store_rollups(store).read(session_id, "hour", 1_714_521_600_000, "all", merged=False)
    return 0 if found is None else len(found.members)


@pytest.mark.parametrize("batch, at_once", [(2, 2), (3, 0)])
def test_the_worker_rolls_up_once_rollup_batch_batches_wait(store, monkeypatch, batch, at_once):
    """Two batches summarised in one claim: with ROLLUP_BATCH 2 they are rolled up at once (before
    the worker yields), with 3 they wait (until the worker ends)."""
    monkeypatch.setattr(ingest, "ROLLUP_BATCH", batch)
    session_id, digest = stamped_batches(store, 2)
    seen: list[int] = []
    one_step(
        store,
        FakeSandbox(digest),
        busy=lambda: seen.append(rolled_up(store, session_id)) or True,
        monkeypatch=monkeypatch,
    )
    assert seen == [at_once] and rolled_up(store, session_id) == 2


def test_an_idle_worker_rolls_up_what_it_summarised_before_it_looks_and_waits(store, monkeypatch):
    session_id, digest = stamped_batches(store, 1)
    seen: list[int] = []
    monkeypatch.setattr(store, "learn_landed", lambda stop: seen.append(rolled_up(store, session_id)) or [])
    _, wake, _ = one_step(store, FakeSandbox(digest), monkeypatch=monkeypatch)
    assert seen == [1] and wake.waits == [1.0]


def test_a_failed_batch_of_uploads_is_logged_and_the_worker_goes_on(store, monkeypatch, caplog):
    uploads = in_claim_order(store, [put(store, PROFILE + bytes([i])) for i in range(2)])

    def failing(*args: Any) -> list:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(ingest, "ingest_many", failing)
    _, wake, _ = one_step(store, FakeSandbox(), monkeypatch=monkeypatch)
    assert wake.waits == [1.0]  # went on: found nothing else to claim (theirs are still claimed), and waited
    (record,) = caplog.records
    assert record.getMessage() == f"ingest: uploads {uploads[0].id}, {uploads[1].id} failed" and record.exc_info


def test_when_idle_the_worker_goes_on_without_waiting(store, monkeypatch):
    first, second = put(store), put(store)
    _, wake, stop_waits = one_step(store, FakeSandbox(), busy=lambda: False, monkeypatch=monkeypatch, poll_seconds=7.5)
    assert state(store, first.id)[0] == "ready" and state(store, second.id)[0] == "ready"
    assert stop_waits == [] and wake.waits == [7.5]  # then nothing left: it polls


def test_without_a_busy_signal_the_worker_never_yields(store, monkeypatch):
    upload = put(store)
    _, wake, stop_waits = one_step(store, FakeSandbox(), busy=None, monkeypatch=monkeypatch)
    assert state(store, upload.id)[0] == "ready" and stop_waits == [] and wake.waits == [1.0]


def test_a_failing_profile_does_not_stop_the_worker(store, monkeypatch, caplog):
    first, second = put(store), put(store)

    class Exploding(FakeSandbox):
        def digest(self, data: bytes, checked: object = None) -> bytes:
            if len(self.given) == 0:
                self.given.append(data)
                raise RuntimeError("boom")
            return super().digest(data)

    one_step(store, Exploding(), monkeypatch=monkeypatch)
    states = sorted(state(store, u.id)[0] or "" for u in (first, second))
    assert states == ["pending", "ready"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() in {f"ingest: upload {first.id} failed", f"ingest: upload {second.id} failed"}


def test_landed_uploads_found_mean_look_again_at_once(store, monkeypatch):
    looks: list[int] = []

    def learn_landed(stop: Callable[[], bool]) -> list[str]:
        looks.append(1)
        assert stop() is False
        return ["log-x"] if len(looks) == 1 else []

    monkeypatch.setattr(store, "learn_landed", learn_landed)
    _, wake, _ = one_step(store, FakeSandbox(), monkeypatch=monkeypatch)
    assert len(looks) == 2 and wake.waits == [1.0]


def test_a_failing_look_for_landed_uploads_is_logged_and_the_worker_polls(store, monkeypatch, caplog):
    def learn_landed(stop: Callable[[], bool]) -> list[str]:
        raise OSError("the blob store is away")

    monkeypatch.setattr(store, "learn_landed", learn_landed)
    _, wake, _ = one_step(store, FakeSandbox(), monkeypatch=monkeypatch)
    assert wake.waits == [1.0]
    assert [r.getMessage() for r in caplog.records] == ["ingest: checking the blob store for landed uploads failed"]


def test_a_failing_claim_is_logged_and_the_worker_polls(store, monkeypatch, caplog):
    def claim_ingest(**kwargs: Any) -> list[UploadRecord]:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store.metadata, "claim_ingest", claim_ingest)
    _, wake, _ = one_step(store, FakeSandbox(), monkeypatch=monkeypatch)
    assert wake.waits == [1.0]
    assert [r.getMessage() for r in caplog.records] == ["ingest: claiming work failed"]


def test_a_claim_failing_while_stopping_ends_the_loop_quietly(store, monkeypatch, caplog):
    worker = IngestWorker(store, sandbox=FakeSandbox())

    def claim_ingest(**kwargs: Any) -> list[UploadRecord]:
        worker._stop.set()
        raise RuntimeError("the store is closed")

    monkeypatch.setattr(store.metadata, "claim_ingest", claim_ingest)
    worker._run()
    assert caplog.records == []


def test_claims_take_a_few_profiles_with_the_lease(store, monkeypatch):
    asked: list[dict[str, Any]] = []
    real = store.metadata.claim_ingest

    def claim_ingest(**kwargs: Any) -> list[UploadRecord]:
        asked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(store.metadata, "claim_ingest", claim_ingest)
    put(store)
    one_step(store, FakeSandbox(), monkeypatch=monkeypatch)
    assert asked[0] == {"lease_ms": 30_000, "limit": ingest.INGEST_BATCH, "max_bytes": ingest.BATCH_BYTES}


# -- the threads ------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"waited too long for {what}"
        time.sleep(0.01)


def test_threads_start_once_summarise_what_is_put_and_stop(store):
    sandbox = FakeSandbox()
    worker = IngestWorker(store, sandbox=sandbox, concurrency=2, poll_seconds=60)
    assert repr(worker) == "IngestWorker(concurrency=2, running=False)"
    assert worker.start() is worker
    threads = list(worker._threads)
    assert [t.name for t in threads] == ["songbird-ingest-0", "songbird-ingest-1"]
    assert all(t.daemon for t in threads)
    worker.start()
    assert worker._threads == threads  # started once
    assert repr(worker) == "IngestWorker(concurrency=2, running=True)"
    upload = put(store)
    worker.wake()  # a PUT wakes it: no 60 s poll
    wait_for(lambda: state(store, upload.id)[0] == "ready", "the profile's digest")
    looker = worker._look_thread
    assert looker is not None and looker.name == "songbird-ingest-look" and looker.daemon and looker.is_alive()
    worker.stop()
    assert worker._threads == [] and not any(t.is_alive() for t in [*threads, looker])
    assert sandbox.closed == 0  # nothing was being summarised: the sandbox is not killed
    assert repr(worker) == "IngestWorker(concurrency=2, running=False)"
    worker.start()  # and again after a stop
    assert len(worker._threads) == 2 and all(t.is_alive() for t in worker._threads)
    worker.stop()  # a thread between its claim and its wait when stopping stops too: no sandbox kill
    assert sandbox.closed == 0


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_a_page_s_ask_for_a_look_is_answered_while_a_slow_profile_is_summarised(store, monkeypatch):
    """A look for landed PUTs asked for (``look_soon``, what ``Store.nudge_landed`` calls) is made
    by the look thread at once, not after the profile being summarised."""
    summarising, finish = threading.Event(), threading.Event()
    looks: list[tuple[str, bool]] = []  # (thread, whether a profile was being summarised)

    class Slow(FakeSandbox):
        def digest(self, data: bytes, checked: object = None) -> bytes:
            summarising.set()
            assert finish.wait(20)
            summarising.clear()
            return super().digest(data)

    def learn_landed(stop: Callable[[], bool]) -> list[UploadRecord]:
        looks.append((threading.current_thread().name, summarising.is_set()))
        return []

    monkeypatch.setattr(store, "learn_landed", learn_landed)
    upload = put(store)
    worker = IngestWorker(store, sandbox=Slow(), poll_seconds=60).start()
    try:
        worker.wake()
        assert summarising.wait(20)
        worker.look_soon()
        wait_for(lambda: ("songbird-ingest-look", True) in looks, "a look while the profile is summarised")
        finish.set()
        wait_for(lambda: state(store, upload.id)[0] == "ready", "the profile's digest")
    finally:
        finish.set()
        worker.stop()


@pytest.mark.mutation_fast("whylogs_songbird/server/ingest.py")
def test_the_look_thread_looks_when_asked_at_most_once_a_second_and_once_more_after(store, monkeypatch):
    """Run on the test's thread, its waits scripted: an ask, another during the wait after its
    look, then none: three looks, a second apart, then it sleeps until asked (or stopped)."""
    worker = IngestWorker(store, sandbox=FakeSandbox())
    looks: list[Callable[[], bool]] = []
    waits: list[float | None] = []
    asks_while_waiting = [worker.look_soon, lambda: None]

    def learn_landed(stop: Callable[[], bool]) -> list[UploadRecord]:
        looks.append(stop)
        if len(looks) == 3:  # the look a second after the last ask; then the worker stops
            worker._stop.set()
            worker._look_wanted.set()
        return [put(store)] if len(looks) == 1 else []

    class ScriptedStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            asks_while_waiting.pop(0)()
            return self.is_set()

    monkeypatch.setattr(store, "learn_landed", learn_landed)
    worker._stop = ScriptedStop()
    worker.look_soon()
    assert not worker._wake.is_set()  # an ask wakes the look thread, not the summarising ones
    worker._look_when_asked()
    assert len(looks) == 3 and waits == [1.0, 1.0] and asks_while_waiting == []
    assert all(stop == worker._stop.is_set for stop in looks)
    assert worker._wake.is_set()  # the first look learned an upload: the worker is woken


def test_stopping_gives_up_a_profile_still_summarised_after_the_grace(store, monkeypatch):
    monkeypatch.setattr(ingest, "STOP_GRACE_SECONDS", 0.05)
    started, closed = threading.Event(), threading.Event()

    class Hanging(FakeSandbox):
        def digest(self, data: bytes, checked: object = None) -> bytes:
            started.set()
            closed.wait(30)
            raise SandboxStopped("closed")

        def close(self) -> None:
            super().close()
            closed.set()

    sandbox = Hanging()
    upload = put(store)
    worker = IngestWorker(store, sandbox=sandbox).start()
    worker.wake()
    assert started.wait(20)
    worker.stop(timeout=20)
    assert sandbox.closed == 1 and worker._threads == []
    assert state(store, upload.id) == ("pending", None, 0)  # left for the next start, its try not counted


class FakeThread:
    """A worker thread as stop() sees it: its joins are recorded; alive until told otherwise."""

    def __init__(self, joins: list[tuple[str, float | None]], name: str, alive: bool) -> None:
        self.joins, self.name, self.alive = joins, name, alive

    def join(self, timeout: float | None = None) -> None:
        self.joins.append((self.name, timeout))

    def is_alive(self) -> bool:
        return self.alive


class Ticking:
    """The module's clock for stop(): 100, 101, 102, ... at each read."""

    def __init__(self) -> None:
        self.now = 99.0

    def monotonic(self) -> float:
        self.now += 1
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)  # the claim heartbeat's thread


def stopping(store: Store, monkeypatch: pytest.MonkeyPatch, *, alive: bool, **stop: float) -> tuple[list, FakeSandbox]:
    monkeypatch.setattr(ingest, "time", Ticking())
    sandbox = FakeSandbox()
    worker = IngestWorker(store, sandbox=sandbox)
    joins: list[tuple[str, float | None]] = []
    worker._threads = [FakeThread(joins, "a", alive), FakeThread(joins, "b", alive)]  # type: ignore[list-item]
    worker.stop(**stop)
    assert worker._threads == [] and worker._stop.is_set() and worker._wake.is_set()
    return joins, sandbox


def test_stop_waits_the_grace_then_gives_up_the_rest_of_the_timeout(store, monkeypatch):
    joins, sandbox = stopping(store, monkeypatch, alive=True)  # deadline 130 (read at 100)
    assert joins == [("a", 5.0), ("b", 5.0), ("a", 27.0), ("b", 26.0)]
    assert sandbox.closed == 1


def test_stop_never_waits_past_its_timeout(store, monkeypatch):
    joins, sandbox = stopping(store, monkeypatch, alive=True, timeout=3)  # deadline 103
    assert joins == [("a", 2.0), ("b", 1.0), ("a", 0.0), ("b", 0.0)]
    assert sandbox.closed == 1


def test_stop_kills_nothing_when_the_threads_ended(store, monkeypatch):
    joins, sandbox = stopping(store, monkeypatch, alive=False, timeout=10)
    assert joins == [("a", 5.0), ("b", 5.0), ("a", 7.0), ("b", 6.0)]
    assert sandbox.closed == 0


def test_the_worker_takes_the_store_s_asks_for_a_look_while_it_runs(store, monkeypatch):
    added: list[Any] = []
    removed: list[Any] = []
    monkeypatch.setattr(store, "add_look_waker", added.append)
    monkeypatch.setattr(store, "remove_look_waker", removed.append)
    monkeypatch.setattr(store, "add_recorded_waker", added.append)
    monkeypatch.setattr(store, "remove_recorded_waker", removed.append)
    worker = IngestWorker(store, sandbox=FakeSandbox(), poll_seconds=60).start()
    try:  # a look asked for by a page, and profiles a request's look recorded, wake it
        assert added == [worker.look_soon, worker.wake] and removed == []
    finally:
        worker.stop()
    assert removed == [worker.look_soon, worker.wake]


@pytest.mark.parametrize(
    "timeout, expected",
    [
        # deadline 130 (read at 100): the grace, then what is left of the timeout, the look thread last
        (30.0, [("a", 5.0), ("b", 5.0), ("a", 27.0), ("b", 26.0), ("look", 25.0)]),
        # deadline 101: no join waits, not even the look thread's
        (1.0, [("a", 0.0), ("b", 0.0), ("a", 0.0), ("b", 0.0), ("look", 0.0)]),
    ],
)
def test_stop_waits_for_the_look_thread_within_what_is_left_of_the_timeout(store, monkeypatch, timeout, expected):
    monkeypatch.setattr(ingest, "time", Ticking())
    worker = IngestWorker(store, sandbox=FakeSandbox())
    joins: list[tuple[str, float | None]] = []
    worker._threads = [FakeThread(joins, "a", True), FakeThread(joins, "b", True)]  # type: ignore[list-item]
    worker._look_thread = FakeThread(joins, "look", True)  # type: ignore[assignment]
    worker.stop(timeout=timeout)
    assert joins == expected and worker._look_thread is None


def test_the_worker_s_defaults(store):
    worker = IngestWorker(store, sandbox=FakeSandbox())
    assert (worker.concurrency, worker.poll_seconds, worker.busy) == (1, 1.0, None)
    assert repr(worker) == "IngestWorker(concurrency=1, running=False)"
