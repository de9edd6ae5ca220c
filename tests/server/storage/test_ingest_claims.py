"""Ingest claims across hosts (issue 27). On SQLite and on PostgreSQL: a claim of several
profiles that ends without a verdict charges none of them, each is then claimed alone, and only a
death on a profile alone counts a try against it; a profile every host dies on is marked invalid
after INGEST_MAX_TRIES, its batch-mates are never charged. On PostgreSQL: work one host announces
wakes the sleeping ingest worker of another."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.ingest import IngestWorker
from whylogs_songbird.server.storage.base import INGEST_MAX_TRIES
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.store import Store

TS = 1_700_000_000_000
LEASE_MS = 60_000


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(tmp_path / "data")
    else:
        url = request.getfixturevalue("postgres_service").new_schema()
        s = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    s.metadata.owner = "host-a"
    yield s
    s.close()


def stored(store: Store, count: int) -> list[str]:
    """``count`` pending profiles, in stored order."""
    session = store.create_session("u")
    ids = []
    for i in range(count):
        upload = store.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + i)
        store_profile_bytes(store, upload.id, b"profile %d" % i)
        ids.append(upload.id)
        time.sleep(0.002)  # one stored order
    return ids


def die(store: Store, how: str) -> None:
    """The host holding the claims dies: it restarts (its start ends its claims) or its leases run out."""
    if how == "restart":
        assert store.metadata.release_ingest_claims(owner="host-a") >= 1
    else:
        time.sleep(0.02)  # the claims were taken with a lease shorter than that


@pytest.mark.parametrize("how", ["restart", "lease"])
def test_only_the_profile_a_host_dies_on_alone_is_charged_and_given_up_on(store, how):
    """A host that dies whenever it holds the killer profile: the killer is given up on after its
    tries, the good profiles claimed with it are summarised without a try counted against them."""
    killer, *good = ids = stored(store, 4)
    lease_ms = LEASE_MS if how == "restart" else 10
    claims: list[list[str]] = []
    while claimed := store.metadata.claim_ingest(lease_ms=lease_ms, limit=8):
        claims.append([u.id for u in claimed])
        if killer in claims[-1]:
            die(store, how)
            continue
        for upload in claimed:
            assert store.metadata.store_summary(upload.id, hashlib.sha256(b"").hexdigest(), b"") is False
            assert upload.sha256 is not None
            assert store.metadata.store_summary(upload.id, upload.sha256, b"digest")
    # one claim of all four, then the killer alone until it is given up on, then each other one alone
    assert claims == [ids] + [[killer]] * INGEST_MAX_TRIES + [[g] for g in good]
    states = {i: (u.ingest_state, u.ingest_tries) for i in ids if (u := store.get_upload(i))}
    assert states == {killer: ("invalid", INGEST_MAX_TRIES), **{g: ("ready", 0) for g in good}}
    reason = store.get_upload(killer).ingest_error or ""
    assert reason.startswith(f"summarising it failed {INGEST_MAX_TRIES} times")


def test_a_sandbox_crash_counts_on_release_and_a_stop_counts_nothing(store):
    first, second = stored(store, 2)
    claimed = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=8)
    assert [u.id for u in claimed] == [first, second] and [u.ingest_tries for u in claimed] == [0, 0]
    one, two = claimed
    assert one.sha256 is not None and two.sha256 is not None
    assert store.metadata.release_ingest_claim(one.id, one.sha256, note="the child died")
    assert store.metadata.release_ingest_claim(two.id, two.sha256, counted=False)
    assert not store.metadata.release_ingest_claim(two.id, two.sha256), "no claim held: nothing to end"
    assert [store.get_upload(i).ingest_tries for i in (first, second)] == [1, 0]
    # released claims are not dead ones: the two go together again, nothing more counted
    again = store.metadata.claim_ingest(lease_ms=LEASE_MS, limit=8)
    assert [(u.id, u.ingest_tries) for u in again] == [(first, 1), (second, 0)]
    store.metadata.owner = "host-b"
    assert not store.metadata.release_ingest_claim(one.id, one.sha256), "another host's claim is left alone"


# -- waking idle workers of other hosts (PostgreSQL LISTEN/NOTIFY) ----------------------------------


class Digests:
    """A sandbox answering a digest for each profile."""

    def digest(self, data: bytes, checked: object = None) -> bytes:
        return b"digest"

    def digest_many(self, profiles: list[bytes], checked: object = ()) -> list[bytes | None]:
        return [b"digest"] * len(profiles)

    def close(self) -> None:
        return None


class WatchedWake(threading.Event):
    """An ingest worker's wake that logs each set, and each wait as it begins and ends."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def set(self) -> None:
        self.log.append("set")
        super().set()

    def wait(self, timeout: float | None = None) -> bool:
        self.log.append("begin")
        try:
            return super().wait(timeout)
        finally:
            self.log.append("end")

    def asleep_after_a_set(self) -> bool:
        """Whether the worker waits now, unset, after it was set at least once."""
        log = list(self.log)
        return "set" in log and log[-1] == "begin" and not self.is_set()


def test_work_announced_by_one_host_wakes_the_idle_worker_of_another_at_once(postgres_service, tmp_path):
    """Host B's worker would not look at the store for an hour by itself; host A's announcement
    (what its busy worker makes when a profile waits) wakes it, and B summarises the profile."""
    url = postgres_service.new_schema()
    host_a = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    host_b = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
    host_a.metadata.owner, host_b.metadata.owner = "host-a", "host-b"
    worker = IngestWorker(host_b, sandbox=Digests(), poll_seconds=3600)  # type: ignore[arg-type]
    wake = worker._wake = WatchedWake()
    worker.start()
    try:
        channel = host_b.metadata._ingest_channel  # type: ignore[attr-defined]

        def listening() -> bool:
            with psycopg.connect(url, autocommit=True) as conn:
                query = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND query = %s"
                return conn.execute(query, (f'LISTEN "{channel}"',)).fetchone()[0] == 1

        wait_for(listening, "host B listens")
        # B was woken once as it began listening: it looked, found nothing, and sleeps again
        wait_for(wake.asleep_after_a_set, "host B's worker sleeps")
        (upload_id,) = stored(host_a, 1)
        host_a.announce_ingest()
        wait_for(lambda: host_b.get_upload(upload_id).ingest_state == "ready", "host B summarises it")
    finally:
        worker.stop()
        host_a.close()
        host_b.close()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)
