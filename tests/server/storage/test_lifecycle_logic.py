"""Deleting sessions, datasets and profiles (whylogs_songbird/server/lifecycle.py) on the real embedded store.

Mark, then purge, on real SQLite and files in a temporary directory: what each delete returns,
which bytes and rows go (and which of a neighbour's stay: an upload whose id starts with another's,
a file in the session directory that is no blob key), a purge cut short by a failing blob store
and finished later, batches past :data:`BATCH` and :data:`RETENTION_BATCH`, retention's cutoff
at N and N+1 milliseconds, and the purge worker's interval. Times that decide a cutoff are set
with SQL on a second connection; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server import lifecycle
from whylogs_songbird.server.lifecycle import (
    BATCH,
    KILL_AFTER_MARK_ENV,
    LEASE_MS,
    POLL_SECONDS,
    RETENTION_BATCH,
    PurgeWorker,
    apply_retention,
    delete_dataset,
    delete_dataset_profile,
    delete_profile,
    delete_session,
    deletions,
    disk_usage,
    finish_deletions,
    purge,
)
from whylogs_songbird.server.storage.deletion import PurgeItem
from whylogs_songbird.server.store import NewUpload, Store, UploadRecord, blob_key, now_ms

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/lifecycle.py"), pytest.mark.hang_bound]

UNKNOWN_SESSION = "session-" + "Z" * 24
UNKNOWN_LOG = "log-" + "Z" * 24


def sql(store: Store, statement: str, params: tuple = ()) -> list[tuple]:
    assert store.data_dir is not None
    with contextlib.closing(sqlite3.connect(store.data_dir / "songbird.sqlite3")) as conn, conn:
        return conn.execute(statement, params).fetchall()


def put(store: Store, session_id: str, data: bytes, ts: int = 1_700_000_000_000) -> UploadRecord:
    upload = store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=ts)], ttl_seconds=900)[0]
    return store_profile_bytes(store, upload.id, data)


def files(store: Store) -> list[str]:
    assert store.data_dir is not None
    root = store.data_dir / "profiles"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def test_the_constants():
    assert (LEASE_MS, POLL_SECONDS, BATCH, RETENTION_BATCH) == (300_000, 30.0, 10, 200)
    assert KILL_AFTER_MARK_ENV == "SONGBIRD_TEST_KILL_AFTER_MARK"


def test_a_store_that_cannot_delete_is_named():
    class Plain:
        pass

    with pytest.raises(TypeError, match="^Plain cannot delete$"):
        deletions(Store(metadata=Plain(), blobs=Plain()))  # type: ignore[arg-type]


def test_disk_usage_counts_stored_profiles_and_their_bytes(store):
    assert disk_usage(store) == {"stored_profiles": 0, "stored_bytes": 0}
    session_id = store.create_session("u").id
    put(store, session_id, b"abc")
    put(store, session_id, b"defgh", ts=2)
    assert disk_usage(store) == {"stored_profiles": 2, "stored_bytes": 8}


# -- deleting a session --------------------------------------------------------------------------


def test_deleting_a_session_removes_its_rows_and_bytes_at_once(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.lifecycle")
    keep = store.create_session("u").id
    kept = put(store, keep, b"kept")
    gone = store.create_session("u").id
    first, second = put(store, gone, b"one"), put(store, gone, b"two", ts=2)
    assert delete_session(store, gone) is True
    assert store.get_session(gone) is None
    assert store.get_upload(first.id) is None and store.get_upload(second.id) is None
    assert files(store) == [kept.path.split("/", 1)[1]]
    assert store.data_dir is not None and not (store.data_dir / "profiles" / gone).exists()
    assert store.get_upload(kept.id) is not None
    assert deletions(store).marked_deleted() == 0
    assert [r.getMessage() for r in caplog.records] == ["deleted a session"]


def test_deleting_an_unknown_or_deleted_session_does_nothing(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.lifecycle")
    session_id = store.create_session("u").id
    assert delete_session(store, UNKNOWN_SESSION) is False
    assert delete_session(store, session_id) is True
    assert delete_session(store, session_id) is False
    assert [r.getMessage() for r in caplog.records] == ["deleted a session"]


def test_every_key_under_the_session_goes_and_odd_files_stay(store):
    session_id = store.create_session("u").id
    upload = put(store, session_id, b"abc")
    assert store.data_dir is not None
    directory = store.data_dir / "profiles" / session_id
    (directory / f"{upload.id}.bin").write_bytes(b"landed late")  # a presigned PUT's plain name
    (directory / "..bin").write_bytes(b"not a key")  # no valid blob key: left alone
    assert delete_session(store, session_id) is True
    assert sorted(p.name for p in directory.iterdir()) == ["..bin"]  # the directory stays with it


def test_a_failing_purge_leaves_the_mark_and_the_worker_finishes_it(store, monkeypatch, caplog):
    session_id = store.create_session("u").id
    upload = put(store, session_id, b"abc")
    real_delete = store.blobs.delete

    def down(key: str) -> None:
        raise OSError("the blob store is down")

    monkeypatch.setattr(store.blobs, "delete", down)
    assert delete_session(store, session_id) is True  # the mark stands
    assert store.get_session(session_id) is None
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warning] == ["purging deleted data failed; it is retried in the background"]
    assert warning[0].exc_info and warning[0].exc_info[0] is OSError  # with its traceback
    assert deletions(store).marked_deleted() == 2 and files(store) != []  # the session and its profile
    monkeypatch.setattr(store.blobs, "delete", real_delete)
    deletions(store).release_purge_claims()
    assert finish_deletions(store) == 1
    assert files(store) == [] and deletions(store).marked_deleted() == 0
    assert store.get_upload(upload.id) is None


def test_an_invalid_session_id_is_never_listed(store):
    assert store.delete_session_bytes("../etc") == []
    assert store.delete_upload_bytes("../etc", UNKNOWN_LOG) == []
    session_id = store.create_session("u").id
    assert store.delete_upload_bytes(session_id, "../x") == []
    assert store.delete_session_bytes(session_id) == []  # no directory yet
    assert store.data_dir is not None
    odd = store.data_dir / "profiles" / UNKNOWN_LOG
    odd.mkdir(parents=True)
    (odd / f"{UNKNOWN_LOG}.bin").write_bytes(b"x")
    assert store.delete_session_bytes(UNKNOWN_LOG) == []  # an upload id is no session id
    assert (odd / f"{UNKNOWN_LOG}.bin").exists()


# -- deleting a profile --------------------------------------------------------------------------


def test_deleting_a_profile_removes_its_versions_and_keeps_its_neighbours(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.lifecycle")
    session_id = store.create_session("u").id
    doomed = put(store, session_id, b"first")
    doomed = store_profile_bytes(store, doomed.id, b"second version")
    neighbour = put(store, session_id, b"neighbour", ts=2)
    assert store.data_dir is not None
    directory = store.data_dir / "profiles" / session_id
    (directory / f"{doomed.id}.bin").write_bytes(b"landed")
    look_alike = doomed.id[:-1] + ("A" if doomed.id[-1] != "A" else "B")
    (directory / f"{look_alike}.bin").write_bytes(b"another upload's")
    (directory / f"{doomed.id}x.bin").write_bytes(b"an id that starts with it")
    assert delete_profile(store, session_id, doomed.id) is True
    assert store.get_upload(doomed.id) is None and store.get_upload(neighbour.id) is not None
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted([neighbour.path.rsplit("/", 1)[1], f"{look_alike}.bin", f"{doomed.id}x.bin"])
    assert [r.getMessage() for r in caplog.records] == ["deleted a profile"]
    assert delete_profile(store, session_id, doomed.id) is False
    assert delete_profile(store, session_id, UNKNOWN_LOG) is False
    assert delete_profile(store, UNKNOWN_SESSION, neighbour.id) is False


def test_deleting_an_open_slot(store, caplog):
    session_id = store.create_session("u").id
    slot = store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)[0]
    assert delete_profile(store, session_id, slot.id) is True
    assert store.get_upload(slot.id) is None
    assert deletions(store).marked_deleted() == 0  # purged at once: a slot has no bytes to delete
    assert caplog.records == []


def test_purging_an_upload_removes_the_key_it_was_recorded_with_outside_its_prefix(store):
    session_id = store.create_session("u").id
    record = put(store, session_id, b"recorded")
    assert store.data_dir is not None
    elsewhere = f"profiles/{session_id}/{UNKNOWN_LOG}.bin"  # a key not under "<upload>."
    (store.data_dir / elsewhere).write_bytes(b"the recorded key")
    purge(store, PurgeItem("upload", session_id, ((record.id, elsewhere),)))
    assert files(store) == []


# -- datasets ------------------------------------------------------------------------------------


def test_deleting_a_dataset_and_a_dataset_profile(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.lifecycle")
    container = store.dataset_container("org-1", "model-1").id
    first, second = put(store, container, b"one"), put(store, container, b"two", ts=2)
    assert delete_dataset_profile(store, container, first.id) is True
    assert store.get_upload(first.id) is None and store.get_upload(second.id) is not None
    assert delete_dataset_profile(store, container, first.id) is False
    assert delete_dataset(store, "org-1", "model-2") is False
    assert delete_dataset(store, "org-2", "model-1") is False
    assert delete_dataset(store, "org-1", "model-1") is True
    assert store.get_upload(second.id) is None and files(store) == []
    assert store.find_dataset("org-1", "model-1") is None
    assert delete_dataset(store, "org-1", "model-1") is False
    assert [r.getMessage() for r in caplog.records] == [
        "deleted a profile of a dataset",
        "deleted a dataset of org org-1",
    ]


def test_a_guest_route_cannot_delete_a_dataset_s_profile(store):
    container = store.dataset_container("org-1", "model-1").id
    upload = put(store, container, b"one")
    assert delete_profile(store, container, upload.id) is False
    assert store.get_upload(upload.id) is not None


# -- the kill seam -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "killed"), [("1", True), ("0", False), ("", False), (None, False)])
def test_the_kill_seam_kills_only_when_set_to_1(store, monkeypatch, caplog, value, killed):
    kills: list[tuple[int, int]] = []
    environ = {} if value is None else {KILL_AFTER_MARK_ENV: value}
    fake_os = SimpleNamespace(environ=environ, getpid=lambda: 4242, kill=lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(lifecycle, "os", fake_os)
    session_id = store.create_session("u").id
    assert delete_session(store, session_id) is True
    assert kills == ([(4242, lifecycle.signal.SIGKILL)] if killed else [])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == (["SONGBIRD_TEST_KILL_AFTER_MARK is set: killing this process after the mark"] if killed else [])


# -- finishing deletions -------------------------------------------------------------------------


def mark_sessions(store: Store, n: int) -> list[str]:
    ids = [store.create_session("u").id for _ in range(n)]
    for session_id in ids:
        put(store, session_id, session_id.encode())
        assert deletions(store).mark_session_deleted(session_id)
    return ids


def test_finishing_purges_past_one_batch_and_counts(store, monkeypatch):
    monkeypatch.setattr(lifecycle, "BATCH", 2)
    mark_sessions(store, 5)
    assert finish_deletions(store) == 5
    assert deletions(store).marked_deleted() == 0 and files(store) == []
    assert finish_deletions(store) == 0


def test_finishing_stops_when_told_between_batches(store, monkeypatch):
    monkeypatch.setattr(lifecycle, "BATCH", 2)
    mark_sessions(store, 3)
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    assert finish_deletions(store, stop=stop) == 2
    assert deletions(store).marked_deleted() == 2  # the third session and its profile
    assert finish_deletions(store, stop=lambda: True) == 0


def test_finishing_claims_with_the_lease(store):
    mark_sessions(store, 1)
    finish_deletions(store, lease_ms=-1)  # claims that end at once: still purged by this pass
    assert deletions(store).marked_deleted() == 0
    mark_sessions(store, 1)
    real = deletions(store).claim_purges
    asked: list[dict[str, Any]] = []

    def claim_purges(**kwargs: Any) -> Any:
        asked.append(kwargs)
        return real(**kwargs)

    store.metadata.claim_purges = claim_purges  # type: ignore[attr-defined]
    finish_deletions(store)
    assert asked[0] == {"lease_ms": 300_000, "limit": 10}


def test_a_marked_profile_of_a_live_session_is_purged_alone(store):
    session_id = store.create_session("u").id
    doomed, kept = put(store, session_id, b"one"), put(store, session_id, b"two", ts=2)
    assert deletions(store).mark_upload_deleted(session_id, doomed.id)
    assert finish_deletions(store) == 1
    assert files(store) == [kept.path.split("/", 1)[1]]
    assert store.get_upload(kept.id) is not None


# -- retention -----------------------------------------------------------------------------------


def test_retention_marks_profiles_stored_before_the_cutoff(store, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.lifecycle")
    session_id = store.create_session("u").id
    old, young = put(store, session_id, b"old"), put(store, session_id, b"young", ts=2)
    now = now_ms()
    sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (now - 3_600_000 - 60_000, old.id))
    sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (now - 3_600_000 + 60_000, young.id))
    assert apply_retention(store, 3600) == 1
    assert deletions(store).marked_deleted() == 1
    assert [r.getMessage() for r in caplog.records] == [
        "retention: marked 1 profiles and sessions older than 3600 s for deletion"
    ]
    caplog.clear()
    assert apply_retention(store, 3600) == 0
    assert caplog.records == []
    finish_deletions(store)
    assert store.get_upload(old.id) is None and store.get_upload(young.id) is not None


def test_retention_in_fractions_of_a_second(store):
    session_id = store.create_session("u").id
    upload = put(store, session_id, b"x")
    now = now_ms()
    sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (now - 10_000, upload.id))
    sql(store, "UPDATE sessions SET created_at = ? WHERE id = ?", (now + 60_000, session_id))
    assert apply_retention(store, 20.5) == 0
    assert apply_retention(store, 9.5) == 1  # 9,500 ms: the profile stored 10 s ago is past it


def test_retention_marks_emptied_old_sessions_but_not_ones_with_a_valid_url(store):
    now = now_ms()
    emptied, with_slot, young = (store.create_session("u").id for _ in range(3))
    store.create_uploads(with_slot, [NewUpload("reference")], ttl_seconds=900)
    for session_id in (emptied, with_slot):
        sql(store, "UPDATE sessions SET created_at = ? WHERE id = ?", (now - 7_200_000, session_id))
    assert apply_retention(store, 3600) == 1
    finish_deletions(store)
    assert store.get_session(emptied) is None
    assert store.get_session(with_slot) is not None and store.get_session(young) is not None


def test_retention_goes_on_past_a_full_batch(store, monkeypatch):
    monkeypatch.setattr(lifecycle, "RETENTION_BATCH", 3)
    now = now_ms()
    ids = [store.create_session("u").id for _ in range(4)]
    sql(store, "UPDATE sessions SET created_at = ?", (now - 7_200_000,))
    session_id = ids[0]
    profiles = [
        store.create_uploads(session_id, [NewUpload("batch", dataset_timestamp=i)], ttl_seconds=900)[0]
        for i in range(4)
    ]
    for i, upload in enumerate(profiles):
        store_profile_bytes(store, upload.id, hashlib.sha256(str(i).encode()).digest())
    sql(store, "UPDATE uploads SET stored_at = ?", (now - 7_200_000,))
    assert apply_retention(store, 3600) == 4 + 4  # every profile, then every session, in batches of 3


def test_retention_stops_when_told(store):
    session_id = store.create_session("u").id
    put(store, session_id, b"x")
    sql(store, "UPDATE uploads SET stored_at = 0")
    sql(store, "UPDATE sessions SET created_at = 0")
    assert apply_retention(store, 1, stop=lambda: True) == 0
    calls: list[int] = []

    def stop_after_profiles() -> bool:
        calls.append(1)
        return len(calls) > 2  # the profile loop asks twice (a batch, then an empty one)

    assert apply_retention(store, 1, stop=stop_after_profiles) == 1
    assert store.get_session(session_id) is not None  # the session was not marked


# -- the worker ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poll", "retention", "interval"),
    [
        (30.0, None, 30.0),
        (30.0, 400.0, 30.0),  # a quarter of the retention is longer than the poll
        (30.0, 100.0, 25.0),
        (30.0, 1.0, 0.5),  # never faster than twice a second
        (30.0, 2.0, 0.5),
        (30.0, 4.0, 1.0),
        (5.0, 40.0, 5.0),
    ],
)
def test_the_purge_worker_s_interval(store, poll, retention, interval):
    worker = PurgeWorker(store, poll_seconds=poll, retention_seconds=retention)
    assert worker.interval == interval and worker.run_first is True and worker.jitter is False
    assert worker.retention_seconds == retention


def test_the_purge_worker_s_defaults(store):
    worker = PurgeWorker(store)
    assert worker.interval == 30.0 and worker.retention_seconds is None
    assert worker.name == "songbird-purge" and worker.failure == "finishing deletions failed; retrying later"


def test_a_pass_applies_retention_then_finishes(store):
    session_id = store.create_session("u").id
    put(store, session_id, b"x")
    sql(store, "UPDATE uploads SET stored_at = 0")
    PurgeWorker(store).run_once()  # no retention: nothing is marked
    assert disk_usage(store)["stored_profiles"] == 1
    PurgeWorker(store, retention_seconds=60).run_once()
    assert disk_usage(store)["stored_profiles"] == 0 and files(store) == []
    stopped = PurgeWorker(store, retention_seconds=60)
    put(store, session_id, b"y", ts=5)
    sql(store, "UPDATE uploads SET stored_at = 0 WHERE deleted_at IS NULL")
    stopped.stop()
    stopped.run_once()
    assert disk_usage(store)["stored_profiles"] == 1  # a stopping worker marks nothing
    assert deletions(store).mark_session_deleted(session_id)
    stopped.run_once()
    assert deletions(store).marked_deleted() == 2  # ... and purges nothing


def test_blob_keys_of_the_session_are_the_store_s(store):
    session_id = store.create_session("u").id
    upload, other = put(store, session_id, b"abc"), put(store, session_id, b"other", ts=2)
    assert upload.path == blob_key(session_id, upload.id, hashlib.sha256(b"abc").hexdigest())
    assert store.delete_upload_bytes(session_id, upload.id) == [upload.path]
    assert store.delete_upload_bytes(session_id, upload.id) == []  # twice is harmless
    assert store.delete_session_bytes(session_id) == [other.path]
    assert store.data_dir is not None and not (store.data_dir / "profiles" / session_id).exists()


# -- exact cutoffs, with the module's clock fixed ---------------------------------------------------

NOW = 1_800_000_000_500  # half a second past a whole second


@pytest.fixture
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(lifecycle, "now_ms", lambda: NOW)
    return NOW


def test_retention_s_profile_cutoff_at_n_and_n_plus_one_millisecond(store, fixed_now):
    session_id = store.create_session("u").id
    at, past = put(store, session_id, b"at"), put(store, session_id, b"past", ts=2)
    sql(store, "UPDATE sessions SET created_at = ?", (NOW,))
    sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (NOW - 3_600_000, at.id))  # exactly the cutoff
    sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (NOW - 3_600_001, past.id))
    assert apply_retention(store, 3600) == 1
    finish_deletions(store)
    assert store.get_upload(past.id) is None and store.get_upload(at.id) is not None


def test_retention_keeps_a_session_whose_url_is_valid_this_second(store, fixed_now):
    valid, expired = store.create_session("u").id, store.create_session("u").id
    for session_id in (valid, expired):
        store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=900)
    sql(store, "UPDATE sessions SET created_at = 0")
    sql(store, "UPDATE uploads SET expires_at = ? WHERE session_id = ?", (NOW // 1000, valid))
    sql(store, "UPDATE uploads SET expires_at = ? WHERE session_id = ?", (NOW // 1000 - 1, expired))
    assert apply_retention(store, 60) == 1
    assert store.get_session(valid) is not None and store.get_session(expired) is None


class PrefixBlobs:
    """The embedded blob store, noting the prefixes the purge asks it to remove."""

    def __init__(self, files: Any) -> None:
        self.files = files
        self.removed: list[str] = []

    def delete_prefix(self, prefix: str) -> list[str]:
        self.removed.append(prefix)
        return list(self.files.delete_prefix(prefix))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.files, name)


def test_the_purge_removes_bytes_by_the_prefix_of_the_upload_then_of_the_session(store):
    session_id = store.create_session("u").id
    doomed, kept = put(store, session_id, b"one"), put(store, session_id, b"two", ts=2)
    blobs = PrefixBlobs(store.blobs)
    store.blobs = blobs  # type: ignore[assignment]
    assert delete_profile(store, session_id, doomed.id) is True
    assert blobs.removed == [f"profiles/{session_id}/{doomed.id}."]
    assert files(store) == [kept.path.split("/", 1)[1]]
    assert delete_session(store, session_id) is True
    assert blobs.removed[-1] == f"profiles/{session_id}/"
    assert files(store) == [] and deletions(store).marked_deleted() == 0
