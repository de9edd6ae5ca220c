"""Learn claims across hosts (issue 27): exactly one host reads and records each presigned PUT
that landed. On SQLite and on PostgreSQL, a host claims landed slots in the store and another
host's live claim is passed over, a dead host's is taken once its lease ran out; on PostgreSQL
and SeaweedFS, two hosts learning the same landed uploads at once read each one's bytes once, and
a host started again learns at once what it had claimed before it stopped."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from conftest import make_profile_bytes
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.serving import open_store
from whylogs_songbird.server.storage.base import BlobVersion
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.storage.s3 import S3BlobStore
from whylogs_songbird.server.store import LEARN_CLAIM_BATCH, LEARN_LEASE_MS, Store, blob_key, now_ms

TS = 1_700_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Any]]:
    """A store of host ``a`` and the metadata store of host ``b`` on the same database."""
    if request.param == "sqlite":
        from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore

        a = Store(tmp_path / "data")
        b: Any = SqliteMetadataStore(tmp_path / "data" / "songbird.sqlite3")
    else:
        url = request.getfixturevalue("postgres_service").new_schema()
        a = Store(tmp_path / "data", metadata=PostgresMetadataStore(url))
        b = PostgresMetadataStore(url)
    a.metadata.owner, b.owner = "host-a", "host-b"
    yield a, b
    b.close()
    a.close()


def test_a_live_learn_claim_is_passed_over_a_dead_one_taken_and_a_stored_slot_never_claimed(metadata_pair):
    a, b = metadata_pair
    session = a.create_session("u")
    slots = [a.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + n).id for n in range(3)]
    assert a.metadata.claim_landed(slots[:2], lease_ms=LEARN_LEASE_MS) == set(slots[:2])
    assert b.claim_landed(slots, lease_ms=LEARN_LEASE_MS) == {slots[2]}, "a's live claims are passed over"
    assert a.metadata.claim_landed(slots, lease_ms=LEARN_LEASE_MS) == set(), "a live claim is not taken again"
    [held] = [u for u in a.metadata.unstored_uploads(session_id=session.id) if u.id == slots[0]]
    assert held.learned_elsewhere("host-b", held.learn_lease) and not held.learned_elsewhere("host-a", 0)

    b.release_landed([slots[0]])  # not b's claim: nothing ends
    a.metadata.release_landed([slots[1]])
    assert b.claim_landed(slots, lease_ms=LEARN_LEASE_MS) == {slots[1]}, "a claim ended by its host is free"

    assert a.metadata.claim_landed(["not-an-id"], lease_ms=1) == set()
    store_profile_bytes(a, slots[2], make_profile_bytes(seed=1))  # recorded meanwhile
    _expire(a, slots[0])  # host a died while learning: its claim is taken once its lease ran out
    assert b.claim_landed(slots, lease_ms=LEARN_LEASE_MS) == {slots[0]}, "a stored slot is never claimed"


def _expire(store: Store, upload_id: str) -> None:
    """The lease of the learn claim on ``upload_id`` ran out (its host died)."""
    metadata: Any = store.metadata
    with metadata._transaction() as conn:
        metadata._exec(conn, "UPDATE uploads SET learn_lease = 1 WHERE id = ?", (upload_id,))


class CountingBlobs:
    """The blob store seam of one host: counts the GETs of each key, passes everything on."""

    def __init__(self, blobs: S3BlobStore, reads: collections.Counter[str], lock: threading.Lock) -> None:
        self._blobs, self._reads, self._lock = blobs, reads, lock

    def read_version(self, key: str, max_bytes: int) -> BlobVersion | None:
        with self._lock:
            self._reads[key] += 1
        return self._blobs.read_version(key, max_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)


def test_two_hosts_learning_the_same_landed_uploads_at_once_read_and_record_each_once(storage_config):
    reads: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    hosts = []
    for owner in ("host-a", "host-b"):
        blobs = S3BlobStore(storage_config["blob_store"], endpoint_url=storage_config["s3_endpoint_url"])
        metadata = PostgresMetadataStore(storage_config["database_url"], owner=owner)
        hosts.append(Store(metadata=metadata, blobs=CountingBlobs(blobs, reads, lock)))  # type: ignore[arg-type]
    try:
        first = hosts[0]
        session = first.create_session("u")
        # more than one claim batch, so the hosts meet on batches and on single slots
        slots = [
            first.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + n)
            for n in range(LEARN_CLAIM_BATCH + 4)
        ]
        data = make_profile_bytes(n_rows=2, seed=3)
        for upload in slots:
            assert requests.put(first.upload_url(upload, 600), data=data, timeout=10).ok
        # two more, each under another host's learn claim: one live, one of a host that died
        live, dead = (
            first.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS - n) for n in (1, 2)
        )
        for upload, lease in ((live, now_ms() + 600_000), (dead, 1)):
            assert requests.put(first.upload_url(upload, 600), data=data, timeout=10).ok
            with psycopg.connect(storage_config["database_url"], autocommit=True) as conn:
                conn.execute(
                    "UPDATE uploads SET learn_lease = %s, learn_owner = %s WHERE id = %s",
                    (lease, f"host-of-{upload.id}", upload.id),
                )
        slots.append(dead)
        start = threading.Barrier(len(hosts))
        learned: dict[str, list[str]] = {}

        def learn(host: Store) -> None:
            start.wait(timeout=30)
            learned[host.metadata.owner] = [u.id for u in host.learn_landed()]  # their ingest workers' looks

        threads = [threading.Thread(target=learn, args=(host,)) for host in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert set(learned) == {"host-a", "host-b"}, "both hosts finished"
        landed = {blob_key(session.id, u.id) for u in slots}
        assert {key: reads[key] for key in landed} == dict.fromkeys(landed, 1), "each landed PUT is read once"
        recorded = learned["host-a"] + learned["host-b"]
        assert sorted(recorded) == sorted(u.id for u in slots), "each upload is recorded by exactly one host"
        assert all(first.get_upload(u.id).stored_at is not None for u in slots)
        live_key = blob_key(session.id, live.id)
        assert reads[live_key] == 0 and first.get_upload(live.id).stored_at is None, "a live claim is left alone"
        _expire(first, live.id)  # that host died too
        assert [u.id for u in hosts[1].learn_landed()] == [live.id]
        assert reads[live_key] == 1
    finally:
        for host in hosts:
            host.close()


def test_a_restarted_host_learns_at_once_what_it_had_claimed_and_leaves_another_host_s_claims(storage_config, tmp_path):
    """A host stops or dies holding a learn claim and an ingest claim, and starts again from its data
    dir: it is the same owner, so its start ends its own claims (not another live host's), and its
    first look learns the upload without waiting out the lease; its profile is claimed again at once."""
    config = ServerConfig(data_dir=tmp_path / "a", **storage_config)
    first = open_store(config)
    other = PostgresMetadataStore(storage_config["database_url"], owner="host-b")
    try:
        session = first.create_session("u")
        data = make_profile_bytes(n_rows=2, seed=5)
        summarising = first.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS)
        assert requests.put(first.upload_url(summarising, 600), data=data, timeout=10).ok
        assert [u.id for u in first.learn_landed(session.id)] == [summarising.id]
        assert first.metadata.claim_upload_ingest(summarising.id, lease_ms=LEARN_LEASE_MS)
        mine, theirs = (
            first.create_upload(session.id, "batch", ttl_seconds=600, dataset_timestamp=TS + n) for n in (1, 2)
        )
        for upload in (mine, theirs):
            assert requests.put(first.upload_url(upload, 600), data=data, timeout=10).ok
        assert first.metadata.claim_landed([mine.id], lease_ms=LEARN_LEASE_MS) == {mine.id}
        assert other.claim_landed([theirs.id], lease_ms=LEARN_LEASE_MS) == {theirs.id}  # host b is at it
        assert not other.claim_upload_ingest(summarising.id, lease_ms=LEARN_LEASE_MS), "a's claims are live"
    finally:
        first.close()  # ... and host a stops (or dies) before it recorded or summarised them
    restarted = open_store(config)
    try:
        assert restarted.metadata.owner == first.metadata.owner != "", "one data dir, one owner"
        assert [u.id for u in restarted.learn_landed()] == [mine.id], "learned at once; b's live claim is left"
        assert restarted.get_upload(theirs.id).stored_at is None
        assert restarted.metadata.claim_upload_ingest(summarising.id, lease_ms=LEARN_LEASE_MS), "its own, released"
        assert not other.claim_upload_ingest(summarising.id, lease_ms=LEARN_LEASE_MS)
    finally:
        restarted.close()
        other.close()


@pytest.fixture
def storage_config(request, monkeypatch):
    from conftest import make_store_config

    return make_store_config("team", request, monkeypatch)
