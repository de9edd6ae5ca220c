"""The PUT path's bookkeeping in the embedded store: what storing a profile records, in as few
statements as it can, must be what a fresh read of the row says; a replaced profile loses its
summary; a slot read before the bytes were checked is checked again when the bytes are recorded.
Real SQLite and real files in a temporary data dir."""

import errno
import fcntl
import hashlib
import os
import stat

import pytest
from conftest import make_profile_bytes

from whylogs_songbird.server.storage.base import TIMELINE_VERSION_KEY
from whylogs_songbird.server.store import OpenUpload, SessionClaimedError, UnknownUploadError, blob_key

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/store.py", "whylogs_songbird/server/storage/sql.py")

TS = 1_700_000_000_000


def new_slot(store, session_id, ts=TS):
    return store.create_upload(session_id, "batch", ttl_seconds=60, dataset_timestamp=ts)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_the_recorded_outcome_is_the_row_as_stored(store):
    session = store.create_session("u")
    first, second = new_slot(store, session.id), new_slot(store, session.id)
    data = make_profile_bytes()
    stored = store.store_profile_data(first.id, data, sha256=sha(data))
    assert stored.duplicate_of is None
    assert stored.upload == store.get_upload(first.id)
    assert (stored.upload.size, stored.upload.sha256, stored.upload.ingest_state) == (len(data), sha(data), "pending")
    assert stored.upload.path == f"profiles/{session.id}/{first.id}.{sha(data)[:16]}.bin"
    repeated = store.store_profile_data(second.id, data, sha256=sha(data))
    assert repeated.duplicate_of == first.id
    assert repeated.upload == store.get_upload(second.id)
    assert (repeated.upload.path, repeated.upload.ingest_state, repeated.upload.duplicate_of) == (None, None, first.id)


def test_replacing_a_summarised_profile_drops_its_summary(store):
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    old, new = make_profile_bytes(seed=1), make_profile_bytes(seed=2)
    store.store_profile_data(slot.id, old, sha256=sha(old))
    assert store.metadata.store_summary(slot.id, sha(old), b"digest of the old bytes")
    assert store.metadata.get_summary(slot.id, sha(old)) == b"digest of the old bytes"
    replaced = store.store_profile_data(slot.id, new, sha256=sha(new))
    assert replaced.upload.ingest_state == "pending"
    assert store.metadata.get_summary(slot.id, sha(old)) is None
    assert store.metadata.get_summary(slot.id, sha(new)) is None
    assert store.read_profile_bytes(replaced.upload) == new
    assert [p.name for p in (store.blobs.root / "profiles" / session.id).iterdir()] == [
        f"{slot.id}.{sha(new)[:16]}.bin"
    ]


def test_a_slot_opened_before_the_check_is_checked_again_when_recorded(store):
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    data = make_profile_bytes()
    opened = store.open_upload(slot.id, sha(data))
    assert (opened.upload.id, opened.original) == (slot.id, None)
    store.claim(session.id, "org-0")  # claimed between the PUT's first read and the recording
    with pytest.raises(SessionClaimedError):
        store.store_profile_data(slot.id, data, sha256=sha(data), opened=opened)
    assert store.get_upload(slot.id).stored_at is None
    assert list((store.blobs.root / "profiles").rglob("*.bin")) == []


def test_an_original_stored_after_the_slot_was_opened_is_found_when_recorded(store):
    session = store.create_session("u")
    first, second = new_slot(store, session.id), new_slot(store, session.id)
    data = make_profile_bytes()
    opened = store.open_upload(second.id, sha(data))  # nothing to repeat yet
    store.store_profile_data(first.id, data, sha256=sha(data))
    outcome = store.store_profile_data(second.id, data, sha256=sha(data), opened=opened)
    assert outcome.duplicate_of == first.id
    assert sorted(p.name for p in (store.blobs.root / "profiles" / session.id).iterdir()) == [
        f"{first.id}.{sha(data)[:16]}.bin"
    ]


def test_an_original_that_changed_after_the_slot_was_opened_gets_the_bytes_written(store):
    session = store.create_session("u")
    first, second = new_slot(store, session.id), new_slot(store, session.id)
    data, other = make_profile_bytes(seed=1), make_profile_bytes(seed=2)
    store.store_profile_data(first.id, data, sha256=sha(data))
    opened = store.open_upload(second.id, sha(data))
    assert opened.original.id == first.id
    store.store_profile_data(first.id, other, sha256=sha(other))  # the original is replaced meanwhile
    outcome = store.store_profile_data(second.id, data, sha256=sha(data), opened=opened)
    assert outcome.duplicate_of is None
    assert outcome.upload == store.get_upload(second.id)
    assert store.read_profile_bytes(outcome.upload) == data
    assert store.metadata.mark_stored(second.id, key=None, size=1, sha256="0" * 64).upload == outcome.upload, (
        "with no key and no original nothing is recorded"
    )


def test_writes_take_turns_through_the_lock_file_beside_the_database(store):
    """The lock other server processes wait on (woken at once, unlike SQLite's sleeping busy wait)."""
    lock_path = store.data_dir / "songbird.sqlite3.write-lock"
    assert stat.S_IMODE(lock_path.stat().st_mode) == 0o600
    other = os.open(lock_path, os.O_RDWR)  # another open file: what another process would hold
    try:
        with store.metadata._transaction():
            with pytest.raises(OSError) as busy:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert busy.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the transaction ended
        fcntl.flock(other, fcntl.LOCK_UN)
        with pytest.raises(RuntimeError), store.metadata._transaction():
            raise RuntimeError("a failed transaction")
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and after one that failed
    finally:
        os.close(other)


def test_the_streamed_put_checks_its_slot_before_reading_the_body(store):
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    assert store.metadata.check_upload_open(slot.id) == store.get_upload(slot.id)
    for unknown in ("log-" + "A" * 24, "session-" + "A" * 24, "x"):
        with pytest.raises(UnknownUploadError):
            store.metadata.check_upload_open(unknown)
    store.claim(session.id, "org-0")
    with pytest.raises(SessionClaimedError):
        store.metadata.check_upload_open(slot.id)


def test_a_put_that_read_only_its_slot_finds_the_original_as_it_records(store):
    """What the PUT route does: one read of the slot, the bytes written, then one write that finds
    the original; the repeated bytes are removed and the session's version is left as it was."""
    session = store.create_session("u")
    first, second = new_slot(store, session.id), new_slot(store, session.id)
    data = make_profile_bytes()
    store.store_profile_data(first.id, data, sha256=sha(data))
    version = store.get_derived(session.id, TIMELINE_VERSION_KEY)
    opened = OpenUpload(store.check_upload_open(second.id), None)
    outcome = store.store_profile_data(second.id, data, sha256=sha(data), opened=opened)
    assert (outcome.duplicate_of, outcome.upload) == (first.id, store.get_upload(second.id))
    assert sorted(p.name for p in (store.blobs.root / "profiles" / session.id).iterdir()) == [
        f"{first.id}.{sha(data)[:16]}.bin"
    ]
    assert store.get_derived(session.id, TIMELINE_VERSION_KEY) == version is not None


def test_a_slot_deleted_between_its_read_and_the_recording_keeps_no_bytes(store):
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    data = make_profile_bytes()
    opened = OpenUpload(store.check_upload_open(slot.id), None)
    assert store.metadata.mark_upload_deleted(session.id, slot.id)  # deleted while the PUT checked the bytes
    with pytest.raises(UnknownUploadError):
        store.store_profile_data(slot.id, data, sha256=sha(data), opened=opened)
    assert list((store.blobs.root / "profiles").rglob("*.bin")) == []
    assert store.get_derived(session.id, TIMELINE_VERSION_KEY) is None


def test_a_failed_recording_keeps_the_bytes_a_retried_put_recorded_already(store):
    """A retried PUT of the same bytes writes the same key: a recording that then fails (the
    session claimed meanwhile) must not remove the profile recorded there."""
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    data = make_profile_bytes()
    stored = store.store_profile_data(slot.id, data, sha256=sha(data))
    opened = OpenUpload(store.check_upload_open(slot.id), None)
    store.claim(session.id, "org-0")
    with pytest.raises(SessionClaimedError):
        store.store_profile_data(slot.id, data, sha256=sha(data), opened=opened)
    assert store.read_profile_bytes(store.get_upload(slot.id)) == data
    assert store.get_upload(slot.id) == stored.upload


def test_a_failed_recording_keeps_the_bytes_another_put_of_them_recorded_meanwhile(store, monkeypatch):
    """Two PUTs of the same bytes to one slot at once (a client's retry after a timeout): both read
    the slot unrecorded and write the same key; the first records it, the second's recording fails.
    The second must not remove the bytes the first one's row names; bytes no row names go."""
    session = store.create_session("u")
    slot = new_slot(store, session.id)
    data = make_profile_bytes()
    opened = OpenUpload(store.check_upload_open(slot.id), None)  # read before either recorded
    first = store.store_profile_data(slot.id, data, sha256=sha(data))

    def failing(*args, **kwargs):
        raise OSError("the database went away")

    monkeypatch.setattr(store.metadata, "mark_stored", failing)
    with pytest.raises(OSError, match="went away"):
        store.store_profile_data(slot.id, data, sha256=sha(data), opened=opened)
    assert store.get_upload(slot.id) == first.upload
    assert store.read_profile_bytes(store.get_upload(slot.id)) == data

    other = new_slot(store, session.id, ts=TS + 1)
    with pytest.raises(OSError, match="went away"):
        store.store_profile_data(other.id, data, sha256=sha(data))
    monkeypatch.setattr(store.metadata, "get_upload", failing)
    with pytest.raises(OSError, match="went away"):
        store.store_profile_data(other.id, b"WHY1 other bytes", sha256=sha(b"WHY1 other bytes"))
    monkeypatch.undo()
    files = sorted(p.name for p in (store.data_dir / "profiles" / session.id).iterdir())
    # the unrecorded bytes of ``other`` went; those whose row could not be read stayed for reconcile
    kept = [first.upload.path, blob_key(session.id, other.id, sha(b"WHY1 other bytes"))]
    assert files == sorted(key.rsplit("/", 1)[1] for key in kept)
