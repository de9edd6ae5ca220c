"""The store facade (server/store.py) called directly: what each of its methods returns, writes and
removes, on the real embedded components (SQLite and files in a temporary data dir).

test_store_logic.py holds the store's main paths; this file pins down the rest, one small test a
behaviour, so that scripts/mutation judges store.py in milliseconds a mutant: the slot sweep,
zipped uploads, reads of presigned bytes, the look for landed PUTs and its waits, deletion of
bytes, and the calls the store hands on to its metadata store. The blob store stands in for S3 by
declaring presigned URLs (a file store that says so) and, where a race is the point, by running a
hook once inside one of its calls. A fixed clock (``clock``) replaces the time the store and the
SQL store read where an expiry boundary is judged to the second; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from whylogs.core.proto import DatasetSegmentHeader, Segment, SegmentTag
from zips import zip_of

from whylogs_songbird.server import store as store_module
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.storage import StorageSpec
from whylogs_songbird.server.storage import sql as sql_module
from whylogs_songbird.server.storage.base import StoredOutcome
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.paging import ProfileQuery
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import (
    NewUpload,
    ReconcileReport,
    SlotLimitError,
    Store,
    StoredBytesChangedError,
    UploadRecord,
    blob_key,
    host_id,
    new_id,
)
from whylogs_songbird.server.zipped import ZipUploadError

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/store.py")

#: The fixed clock's time (epoch ms; later than any file written by these tests) and in seconds.
NOW_MS = 1_900_000_000_000
NOW_S = NOW_MS // 1000


def plain(column: str = "c") -> bytes:
    """A well-formed serialized profile of one column (one character) without chunks, no segment."""
    return b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01" + column.encode() + b"\x12\x00"


def segmented(column: str = "c", **tags: str) -> bytes:
    """:func:`plain` whose segment header names one segment with ``tags`` (whylogs' prefix added)."""
    header = DatasetSegmentHeader(
        has_segments=True,
        segments=[Segment(tags=[SegmentTag(key=f"whylogs.tag.{k}", value=v) for k, v in tags.items()])],
    ).SerializeToString()
    return b"WHY1" + bytes([len(header)]) + header + plain(column)[5:]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Blobs(FileBlobStore):
    """Files that may declare presigned URLs (as S3 does) and run a hook once after one of their
    calls (``after[name]``; before it, for ``read_version``): what another process does then."""

    def __init__(self, root: Path, presigns: bool) -> None:
        super().__init__(root)
        self.presigns_uploads = presigns
        self.after: dict[str, Callable[[], object]] = {}
        #: objects named like no key of this server (S3 lists whatever was PUT): key -> written at (ms)
        self.strays: dict[str, int] = {}

    def _hook(self, name: str) -> None:
        hook = self.after.pop(name, None)
        if hook is not None:
            hook()

    def presign_put(self, key, ttl_seconds):
        return f"http://127.0.0.1:9/{key}" if self.presigns_uploads else None

    def read_version(self, key, max_bytes):
        self._hook("read_version")
        return super().read_version(key, max_bytes)

    def put_bytes(self, key, data):
        super().put_bytes(key, data)
        self._hook("put_bytes")

    def copy_version(self, source, target, tag):
        vouched = super().copy_version(source, target, tag)
        self._hook("copy_version")
        return vouched

    def exists(self, key):
        found = super().exists(key)
        self._hook("exists")
        return found

    def list_stamped(self, prefix=""):
        yield from super().list_stamped(prefix)
        yield from ((key, 1, stamp) for key, stamp in self.strays.items() if key.startswith(prefix))
        self._hook("list_stamped")

    def delete(self, key):
        if self.strays.pop(key, None) is None:
            super().delete(key)


def open_store(data: Path, presigns: bool) -> Store:
    return Store(data, metadata=SqliteMetadataStore(data / "songbird.sqlite3"), blobs=Blobs(data, presigns))


@pytest.fixture
def pstore(tmp_path: Path) -> Iterator[Store]:
    """A store whose blob store presigns PUT URLs (clients PUT straight to it)."""
    opened = open_store(tmp_path / "p", presigns=True)
    yield opened
    opened.close()


@pytest.fixture
def estore(tmp_path: Path) -> Iterator[Store]:
    """The embedded store with the hookable blob store (it does not presign)."""
    opened = open_store(tmp_path / "e", presigns=False)
    yield opened
    opened.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The time the store and the SQL store read, fixed at NOW_MS (move it with ``clock.now``)."""
    fixed = SimpleNamespace(now=NOW_MS)
    monkeypatch.setattr(store_module, "now_ms", lambda: fixed.now)
    monkeypatch.setattr(sql_module, "now_ms", lambda: fixed.now)
    return fixed


def sql(store: Store, statement: str, params: tuple = ()) -> list[tuple]:
    """Run ``statement`` on a second connection to the store's database (committed)."""
    assert store.data_dir is not None
    conn = sqlite3.connect(store.data_dir / "songbird.sqlite3")
    try:
        with conn:
            return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def new_slot(store: Store, session_id: str, ts: int | None = 100, **options) -> UploadRecord:
    return store.create_upload(session_id, "batch", ttl_seconds=600, dataset_timestamp=ts, **options)


def expire_at(store: Store, upload: UploadRecord, expires_at: int) -> None:
    sql(store, "UPDATE uploads SET expires_at = ? WHERE id = ?", (expires_at, upload.id))


def put(store: Store, session_id: str, data: bytes, **options) -> UploadRecord:
    """A stored batch profile of ``data`` (a PUT the server received)."""
    upload = new_slot(store, session_id, **options)
    return store.store_profile_data(upload.id, data, sha256=sha(data)).upload


def land(store: Store, upload: UploadRecord, data: bytes) -> str:
    """Bytes a client PUT to the slot's presigned URL; their key."""
    key = blob_key(upload.session_id, upload.id)
    store.blobs.put_bytes(key, data)
    return key


def keys(store: Store) -> list[str]:
    return sorted(store.blobs.list_keys("profiles/"))


# -- small pure helpers -------------------------------------------------------------------------


def test_the_host_id_is_a_hash_of_the_data_dirs_health_token(tmp_path):
    (tmp_path / "health.token").write_text("a" * 64 + "\n")
    assert host_id(tmp_path) == "986bbd8b86af707d"
    assert host_id(tmp_path) == "986bbd8b86af707d"


def test_a_blob_keys_upload_id_is_its_file_name_before_the_first_dot():
    session, upload = new_id("session"), new_id("log")
    assert store_module._upload_id_of(f"profiles/{session}/{upload}.bin") == upload
    assert store_module._upload_id_of(f"profiles/{session}/{upload}.{'0' * 16}.bin") == upload
    assert store_module._upload_id_of(f"profiles/{session}/stray.bin") is None


# -- hooks --------------------------------------------------------------------------------------


def test_the_landed_hook_runs_only_for_a_new_valid_recorded_upload(estore):
    session = estore.create_session("u")
    upload = put(estore, session.id, plain())
    seen: list[str] = []
    estore.add_landed_hook(lambda record: seen.append(record.id))
    estore.upload_landed(StoredOutcome(upload=dataclasses.replace(upload, ingest_state="invalid")))
    estore.upload_landed(StoredOutcome(upload=upload, duplicate_of=upload.id))
    estore.upload_landed(StoredOutcome(upload=upload, recorded=False))
    assert seen == []
    estore.upload_landed(StoredOutcome(upload=upload))
    assert seen == [upload.id]


def test_a_failing_landed_hook_is_logged_and_the_next_one_runs(estore, caplog):
    session = estore.create_session("u")
    upload = put(estore, session.id, plain())
    seen: list[str] = []

    def failing(record: UploadRecord) -> None:
        raise RuntimeError("boom")

    estore.add_landed_hook(failing)
    estore.add_landed_hook(lambda record: seen.append(record.id))
    with caplog.at_level(logging.ERROR, logger="whylogs_songbird.server"):
        estore.upload_landed(StoredOutcome(upload=upload))
    assert seen == [upload.id]
    assert [r.getMessage() for r in caplog.records] == [f"a hook on upload {upload.id} failed"]
    assert caplog.records[0].exc_info is not None


def test_a_removed_landed_hook_runs_no_more_and_removing_an_unknown_one_is_no_error(estore):
    session = estore.create_session("u")
    seen: list[str] = []

    def hook(record: UploadRecord) -> None:
        seen.append(record.id)

    estore.add_landed_hook(hook)
    estore.remove_landed_hook(hook)
    estore.remove_landed_hook(hook)
    put(estore, session.id, plain())
    assert seen == []


# -- sessions, containers, settings, derived artefacts, keys ------------------------------------


def test_a_claimed_session_is_no_guest_session_but_still_a_session_and_a_container(estore):
    session = estore.create_session("u")
    assert estore.guest_session(session.id) == session
    estore.claim(session.id, "org-1")
    assert estore.guest_session(session.id) is None
    assert estore.get_session(session.id).claimed_org == "org-1"
    assert estore.container(session.id).id == session.id


def test_a_dataset_container_is_a_container_but_no_session(estore):
    dataset = estore.dataset_container("org-1", "model-1")
    assert estore.dataset_container("org-1", "model-1").id == dataset.id
    assert estore.dataset_container("org-1", "model-2").id != dataset.id
    assert estore.container(dataset.id) == dataset
    assert estore.get_session(dataset.id) is None


def test_settings_are_kept_replaced_and_listed_by_prefix(estore):
    container = estore.dataset_container("org-1", "model-1").id
    estore.put_setting(container, "schema", "{}")
    estore.put_setting(container, "weights", "[1]")
    estore.put_setting(container, "weights", "[2]")
    assert estore.get_setting(container, "weights") == "[2]"
    assert estore.get_setting(container, "schema") == "{}"
    assert estore.get_setting(container, "nothing") is None
    assert estore.list_settings(container) == [("schema", "{}"), ("weights", "[2]")]
    assert estore.list_settings(container, "w") == [("weights", "[2]")]


def test_derived_artefacts_are_kept_per_session_and_dropped_by_prefix_but_the_kept_one(estore):
    one, two = estore.create_session("u").id, estore.create_session("u").id
    for key in ("a/1", "a/2", "b/1"):
        estore.put_derived(one, key, key.encode())
    estore.put_derived(two, "a/1", b"other")
    assert estore.get_derived(one, "a/1") == b"a/1"
    assert estore.get_derived(one, "c") is None
    assert estore.drop_derived(one, "a/", keep="a/2") == 1
    assert [estore.get_derived(one, k) for k in ("a/1", "a/2", "b/1")] == [None, b"a/2", b"b/1"]
    assert estore.drop_derived(one) == 2
    assert estore.get_derived(two, "a/1") == b"other"


def test_api_keys_are_added_found_listed_and_revoked_once(estore):
    estore.add_api_key("key-1", "org-1", "f" * 64)
    found = estore.find_api_key("key-1")
    assert (found["org_id"], found["secret_sha256"], found["revoked_at"]) == ("org-1", "f" * 64, None)
    assert estore.find_api_key("key-2") is None
    assert [k["key_id"] for k in estore.list_api_keys()] == ["key-1"]
    assert estore.revoke_api_key("key-1") is True
    assert estore.revoke_api_key("key-1") is False
    assert estore.find_api_key("key-1")["revoked_at"] is not None


class _NotSql:
    def close(self) -> None:
        return None


def test_notifications_and_deletions_are_the_sql_metadata_stores_own(estore):
    assert estore.notification_queue() is estore.metadata
    assert estore.deletions() is estore.metadata
    other = Store(metadata=_NotSql(), blobs=_NotSql())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^_NotSql keeps no notifications$"):
        other.notification_queue()
    with pytest.raises(TypeError, match=r"^_NotSql cannot delete$"):
        other.deletions()


# -- profile lookups and counts ------------------------------------------------------------------


@pytest.fixture
def batches(estore) -> SimpleNamespace:
    """A session with batches at 100 (segment a=1), 199 and 299, and a reference, made and stored in this
    order, a millisecond apart (reads list batches oldest first: by when their slot was made)."""
    session = estore.create_session("u").id
    a = put(estore, session, plain("a"), ts=100, segment_tags=(("a", "1"),))
    b = put(estore, session, plain("b"), ts=199)
    c = put(estore, session, plain("c"), ts=299)
    ref = estore.create_upload(session, "reference", ttl_seconds=60, alias="r")
    ref = estore.store_profile_data(ref.id, plain("r"), sha256=sha(plain("r"))).upload
    for order, upload in enumerate((a, b, c, ref), 1):  # made and stored in this order, a millisecond apart
        sql(estore, "UPDATE uploads SET created_at = ?, stored_at = ? WHERE id = ?", (order, NOW_MS + order, upload.id))
    return SimpleNamespace(session=session, a=a, b=b, c=c, ref=ref)


def test_batch_profiles_are_read_by_timestamp_range_span_segments_and_buckets(estore, batches):
    s = batches.session
    assert [u.id for u in estore.batch_profiles_between(s, 100, 250)] == [batches.a.id, batches.b.id]
    assert [u.id for u in estore.batch_profiles_between(s, 150, None)] == [batches.b.id, batches.c.id]
    assert estore.batch_timestamp_span(s) == (100, 299)
    assert sorted(estore.batch_segments(s)) == [(), (("a", "1"),)]
    assert estore.batch_bucket_counts(s, 100) == (2, 0)
    assert estore.batch_bucket_counts(s, 100, 50) == (3, 0)
    assert estore.metadata.store_summary(batches.c.id, batches.c.sha256, b"s")
    assert estore.batch_bucket_counts(s, 100) == (2, 1)
    assert sorted(estore.batch_timestamps(s)) == [(100, (("a", "1"),), True), (199, (), True), (299, (), False)]
    assert list(estore.batch_day_marks(s)) == [0]
    assert estore.batch_day_marks(s)[0][0] == 3


def test_profiles_are_counted_by_kind_up_to_a_bound_and_their_bytes_summed(estore, batches):
    s = batches.session
    assert estore.profile_counts(s) == {"batch": 3, "reference": 1}
    assert estore.profile_counts(s, at_most=2) == {"batch": 2, "reference": 1}
    assert estore.count_profiles(s) == 4
    assert estore.count_profiles(s, at_most=2) == 2
    assert estore.profile_bytes(s) == 4 * len(plain())


def test_a_page_of_profiles_follows_its_query(estore, batches):
    page = estore.page_profiles(batches.session, ProfileQuery(limit=2, kind="batch"))
    assert [u.id for u in page.uploads] == [batches.c.id, batches.b.id]
    assert page.has_next is True and page.has_previous is False


def test_a_stored_profile_opens_as_a_file_and_a_slot_without_bytes_does_not(estore, batches):
    with estore.open_profile(batches.b) as file:
        assert file.read() == plain("b")
    empty = new_slot(estore, batches.session)
    with pytest.raises(FileNotFoundError, match=rf"^upload {empty.id} has no stored bytes$"):
        estore.open_profile(empty)
    assert estore.check_upload_open(empty.id) == empty


def test_duplicates_of_stored_profiles_are_counted(estore, batches):
    put(estore, batches.session, plain("b"), ts=199)
    put(estore, batches.session, plain("b"), ts=199)
    assert estore.duplicates_of([batches.b.id]) == 2
    assert estore.duplicates_of([batches.c.id]) == 0


# -- summaries: claims and verdicts --------------------------------------------------------------


def test_ingest_claims_go_through_to_the_metadata_store(estore, batches):
    claimed = estore.claim_ingest(lease_ms=60_000, limit=2, max_bytes=100)
    assert [u.id for u in claimed] == [batches.a.id, batches.b.id]
    assert [u.id for u in estore.claim_ingest(lease_ms=60_000, limit=5, max_bytes=len(plain()))] == [batches.c.id]
    assert estore.renew_ingest_claims([batches.a.id, batches.ref.id], lease_ms=60_000) == {batches.a.id}
    assert estore.claim_upload_ingest(batches.ref.id, lease_ms=60_000) is True
    assert estore.claim_upload_ingest(batches.ref.id, lease_ms=60_000) is False
    assert estore.release_ingest_claim(batches.a.id, batches.a.sha256, note="why", counted=False) is True
    after = estore.get_upload(batches.a.id)
    assert (after.ingest_error, after.ingest_tries) == ("why", 0)
    assert estore.release_ingest_claim(batches.b.id, batches.b.sha256) is True
    assert (estore.get_upload(batches.b.id).ingest_error, estore.get_upload(batches.b.id).ingest_tries) == (None, 1)
    assert estore.release_ingest_claim(batches.b.id, batches.b.sha256) is False
    assert estore.claim_ingest(lease_ms=60_000) == [estore.get_upload(batches.a.id)]


def test_summaries_and_verdicts_are_kept_for_their_version_of_the_bytes(estore, batches):
    assert estore.store_summary(batches.a.id, batches.a.sha256, b"summary") is True
    assert estore.get_summary(batches.a.id, batches.a.sha256) == b"summary"
    assert estore.store_summary(batches.b.id, "0" * 64, b"stale") is False
    assert estore.store_summaries([(batches.b.id, batches.b.sha256, b"x"), (batches.c.id, "0" * 64, b"y")]) == [
        True,
        False,
    ]
    assert estore.mark_invalid(batches.c.id, batches.c.sha256, "unreadable") is True
    assert estore.mark_invalid(batches.c.id, "0" * 64, "unreadable") is False
    assert (estore.get_upload(batches.c.id).ingest_state, estore.get_upload(batches.c.id).ingest_error) == (
        "invalid",
        "unreadable",
    )
    assert estore.pending_ingest() == 1  # the reference


# -- deleting bytes ------------------------------------------------------------------------------


def test_a_sessions_bytes_are_removed_with_its_directory_and_no_other_sessions(estore):
    one, two = estore.create_session("u").id, estore.create_session("u").id
    first, second = put(estore, one, plain("a")), put(estore, one, plain("b"))
    other = put(estore, two, plain("a"))
    assert sorted(estore.delete_session_bytes(one)) == sorted([first.path, second.path])
    assert not (estore.blobs.root / "profiles" / one).exists()
    assert keys(estore) == [other.path]
    assert estore.delete_session_bytes(one) == []


@pytest.mark.parametrize("session_id", ["session-../x", "log-" + "A" * 24])
def test_a_malformed_session_id_removes_no_bytes(estore, session_id):
    upload = put(estore, estore.create_session("u").id, plain())
    assert estore.delete_session_bytes(session_id) == []
    assert keys(estore) == [upload.path]


def test_an_uploads_bytes_are_every_version_under_its_prefix_and_its_recorded_key(estore):
    one, two = estore.create_session("u").id, estore.create_session("u").id
    upload = put(estore, one, plain("a"))
    landed = land(estore, upload, b"landed")
    older = blob_key(one, upload.id, sha(b"older"))
    estore.blobs.put_bytes(older, b"older")
    neighbour = put(estore, one, plain("b"))
    longer = blob_key(one, upload.id + "x")  # an id that starts like this one's
    estore.blobs.put_bytes(longer, b"x")
    elsewhere = blob_key(two, upload.id, sha(b"moved"))  # the key it was recorded with, in another dir
    estore.blobs.put_bytes(elsewhere, b"moved")
    removed = estore.delete_upload_bytes(one, upload.id, path=elsewhere)
    assert sorted(removed) == sorted([upload.path, landed, older])
    assert keys(estore) == sorted([neighbour.path, longer])
    assert estore.delete_upload_bytes(one, upload.id, path=upload.path) == []


@pytest.mark.parametrize("ids", [("session-../x", "ok"), ("ok", "log-../x"), ("ok", "session-ok")])
def test_malformed_ids_remove_only_the_recorded_key_of_an_upload(estore, ids):
    session = estore.create_session("u").id
    upload = put(estore, session, plain("a"))
    land(estore, upload, b"landed")
    session_id = session if ids[0] == "ok" else ids[0]
    upload_id = upload.id if ids[1] == "ok" else ids[1].replace("session-ok", session)
    assert estore.delete_upload_bytes(session_id, upload_id, path=upload.path) == []
    assert keys(estore) == [blob_key(session, upload.id)]
    assert estore.delete_upload_bytes(session_id, upload_id) == []
    assert keys(estore) == [blob_key(session, upload.id)]


def test_deleting_a_containers_uploads_learns_landed_ones_first_and_removes_every_byte(pstore):
    container = pstore.dataset_container("org-1", "model-1").id
    stored = put(pstore, container, plain("a"))
    landed = new_slot(pstore, container, ts=200)
    land(pstore, landed, plain("b"))
    assert pstore.delete_uploads(container) == 2
    assert keys(pstore) == []
    assert pstore.get_upload(stored.id) is None and pstore.get_upload(landed.id) is None


def test_moving_a_transactions_uploads_learns_landed_ones_first(pstore):
    transaction, dataset = pstore.create_session("u").id, pstore.dataset_container("org-1", "model-1").id
    stored = put(pstore, transaction, plain("a"))
    landed = new_slot(pstore, transaction, ts=200)
    land(pstore, landed, plain("b"))
    new_slot(pstore, transaction, ts=300)  # never PUT: stays behind
    assert sorted(pstore.move_stored_uploads(transaction, dataset)) == sorted([stored.id, landed.id])
    assert {u.session_id for u in pstore.list_profiles(dataset)} == {dataset}
    assert pstore.list_profiles(transaction) == []


# -- the sweep of upload slots never PUT ---------------------------------------------------------


def expired_slots(store: Store, session_id: str, *ages: int) -> list[UploadRecord]:
    """Slots never PUT whose URL expired ``age`` seconds before the fixed clock's now, one an age."""
    made = []
    for age in ages:
        upload = new_slot(store, session_id)
        expire_at(store, upload, NOW_S - age)
        made.append(upload)
    return made


def left(store: Store, uploads: list[UploadRecord]) -> list[bool]:
    return [store.get_upload(u.id) is not None for u in uploads]


def test_the_sweep_deletes_slots_expired_longer_than_ten_minutes_ago_and_logs_how_many(estore, clock, caplog):
    session = estore.create_session("u").id
    slots = expired_slots(estore, session, 602, 601, 600, 599)
    stored = put(estore, session, plain())
    expire_at(estore, stored, NOW_S - 10_000)
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server"):
        assert estore.sweep_expired_slots() == 2
    assert left(estore, slots) == [False, False, True, True]
    assert estore.get_upload(stored.id) is not None
    assert [r.getMessage() for r in caplog.records] == ["deleted 2 upload slots whose URLs expired unused"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server"):
        assert estore.sweep_expired_slots() == 0
    assert caplog.records == []


def test_the_sweep_with_presigned_urls_waits_an_hour_more(pstore, clock):
    session = pstore.create_session("u").id
    slots = expired_slots(pstore, session, 4201, 4200)
    assert pstore.sweep_expired_slots() == 1
    assert left(pstore, slots) == [False, True]


def test_the_sweep_takes_the_grace_it_is_given(estore, clock):
    slots = expired_slots(estore, estore.create_session("u").id, 11, 10)
    assert estore.sweep_expired_slots(grace_seconds=10) == 1
    assert left(estore, slots) == [False, True]


def test_the_sweep_goes_on_batch_after_batch_until_one_is_short(estore, clock, monkeypatch):
    monkeypatch.setattr(store_module, "SWEEP_BATCH", 2)
    slots = expired_slots(estore, estore.create_session("u").id, 700, 700, 700, 700, 700)
    asked: list[int] = []
    assert estore.sweep_expired_slots(stop=lambda: bool(asked.append(1)) or len(asked) > 9) == 5
    assert left(estore, slots) == [False] * 5
    assert len(asked) == 3


def test_a_stopping_sweep_deletes_nothing(estore, clock):
    slots = expired_slots(estore, estore.create_session("u").id, 700)
    assert estore.sweep_expired_slots(stop=lambda: True) == 0
    assert left(estore, slots) == [True]


def test_the_sweep_records_expired_slots_whose_bytes_landed_and_deletes_the_others(pstore, clock):
    one, two = pstore.create_session("u").id, pstore.create_session("u").id
    late_one, never, late_two = expired_slots(pstore, one, 5000, 5000) + expired_slots(pstore, two, 5000)
    keys_landed = [land(pstore, late_one, plain("a")), land(pstore, late_two, plain("b"))]
    assert pstore.sweep_expired_slots() == 1
    assert left(pstore, [late_one, never, late_two]) == [True, False, True]
    recorded = [pstore.get_upload(late_one.id), pstore.get_upload(late_two.id)]
    assert [u.path for u in recorded] == [
        blob_key(one, late_one.id, sha(plain("a"))),
        blob_key(two, late_two.id, sha(plain("b"))),
    ]
    assert not any(k in keys(pstore) for k in keys_landed)


def test_a_sweep_whose_whole_batch_landed_unrecordable_stops_after_one_batch(pstore, clock, monkeypatch):
    monkeypatch.setattr(store_module, "SWEEP_BATCH", 2)
    session = pstore.create_session("u").id
    slots = expired_slots(pstore, session, 5000, 5000)
    for upload in slots:
        land(pstore, upload, plain())
    pstore.claim(session, "org-1")  # its landed bytes can no longer be recorded
    asked: list[int] = []
    assert pstore.sweep_expired_slots(stop=lambda: bool(asked.append(1)) or len(asked) > 9) == 0
    assert left(pstore, slots) == [True, True]
    assert len(asked) == 1


# -- zipped uploads ------------------------------------------------------------------------------


def test_a_zip_unpacks_to_its_members_with_the_segment_each_header_names(estore):
    data = zip_of({"one.bin": segmented("a", k="1"), "two.bin": plain("b")})
    assert estore.unpack_zip(data) == [(segmented("a", k="1"), (("k", "1"),)), (plain("b"), ())]


def test_a_zip_with_a_member_that_is_no_profile_is_refused_naming_it_in_80_characters(estore):
    name = "n" * 100
    with pytest.raises(ZipUploadError) as caught:
        estore.unpack_zip(zip_of({"ok.bin": plain(), name: b"WHY1 nonsense"}))
    assert str(caught.value).startswith(f"its member {'n' * 80!r} is not a well-formed whylogs profile (")


def test_a_zip_is_held_to_the_stores_upload_and_column_limits(estore):
    data = zip_of({"one.bin": plain("a"), "two.bin": plain("b")})
    estore.max_upload_bytes = 2 * len(plain())
    assert len(estore.unpack_zip(data)) == 2
    estore.max_upload_bytes -= 1
    with pytest.raises(ZipUploadError):
        estore.unpack_zip(data)
    estore.max_upload_bytes, estore.max_columns = 1000, 1
    assert len(estore.unpack_zip(data)) == 2
    estore.max_columns = 0
    with pytest.raises(ZipUploadError, match="is not a well-formed whylogs profile"):
        estore.unpack_zip(data)


def test_a_zips_profiles_are_stored_in_its_slot_and_new_ones_like_it(estore, clock, caplog):
    session = estore.create_session("u").id
    upload = estore.create_upload(session, "batch", ttl_seconds=3600, dataset_timestamp=100, alias="z", format="zip")
    members = [(segmented("a", k="1"), (("k", "1"),)), (segmented("b", k="2"), (("k", "2"),)), (plain("c"), ())]
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server"):
        outcome = estore.store_zip(upload, members)
    assert (outcome.upload.id, outcome.upload.sha256) == (upload.id, sha(members[0][0]))
    profiles = sorted(estore.list_profiles(session), key=lambda p: p.segment_tags)  # stored in one millisecond
    assert [(p.kind, p.dataset_timestamp, p.alias, p.segment_tags) for p in profiles] == [
        ("batch", 100, "z", ()),
        ("batch", 100, "z", (("k", "1"),)),
        ("batch", 100, "z", (("k", "2"),)),
    ]
    assert [estore.read_profile_bytes(p) for p in profiles] == [members[2][0], members[0][0], members[1][0]]
    assert {p.expires_at for p in profiles} == {NOW_S + 3600}
    assert estore.metadata.unstored_uploads(session_id=session) == []
    assert "stored a zip of 3 profiles" in [r.getMessage() for r in caplog.records]


def test_the_new_slots_of_a_zip_whose_url_expired_get_a_minute(estore, clock):
    session = estore.create_session("u").id
    upload = estore.create_upload(session, "batch", ttl_seconds=-100, dataset_timestamp=100, segment_tags=[("s", "t")])
    estore.store_zip(upload, [(plain("a"), ()), (plain("b"), ())])
    profiles = sorted(estore.list_profiles(session), key=lambda p: p.expires_at)
    assert [(p.expires_at, p.segment_tags, p.sha256) for p in profiles] == [
        (NOW_S - 100, (("s", "t"),), sha(plain("a"))),
        (NOW_S + 60, (("s", "t"),), sha(plain("b"))),
    ]


def test_a_zip_that_landed_is_stored_as_its_profiles_and_removed(pstore):
    session = pstore.create_session("u").id
    upload = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=100, format="zip")
    key = land(pstore, upload, zip_of({"a.bin": segmented("a", k="1"), "b.bin": plain("b")}))
    learned = pstore.learn_landed(session)
    assert [u.id for u in learned] == [upload.id]
    assert [(p.segment_tags, pstore.read_profile_bytes(p)) for p in pstore.list_profiles(session)] == [
        ((("k", "1"),), segmented("a", k="1")),
        ((), plain("b")),
    ]
    assert key not in keys(pstore)


def test_a_landed_zip_that_is_refused_is_recorded_invalid_with_its_bytes(pstore):
    session = pstore.create_session("u").id
    upload = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=100, format="zip")
    data = zip_of({"bad.bin": b"not a profile"})
    land(pstore, upload, data)
    seen: list[str] = []
    pstore.add_landed_hook(lambda record: seen.append(record.id))
    [learned] = pstore.learn_landed(session)
    assert (learned.id, learned.ingest_state, learned.size, learned.sha256) == (
        upload.id,
        "invalid",
        len(data),
        sha(data),
    )
    assert learned.ingest_error.startswith(
        "it is not a zip of whylogs profiles this server takes (its member 'bad.bin' is not a well-formed"
    )
    assert learned.path == blob_key(session, upload.id, sha(data))
    assert keys(pstore) == [learned.path]
    assert pstore.read_profile_bytes(learned) == data
    assert seen == []


@pytest.mark.parametrize("data", [zip_of({"bad.bin": b"not a profile"}), zip_of({"a.bin": plain("a")})])
def test_a_landed_zip_of_a_claimed_session_stays_unrecorded_and_in_place(pstore, data):
    session = pstore.create_session("u").id
    upload = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=100, format="zip")
    key = land(pstore, upload, data)
    pstore.claim(session, "org-1")
    assert pstore.learn_landed(session) == []
    assert keys(pstore) == [key]
    assert pstore.get_upload(upload.id).stored_at is None


def test_landed_bytes_are_taken_as_a_zip_only_by_a_zip_slot(pstore):
    session = pstore.create_session("u").id
    zip_slot = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=1, format="zip")
    plain_slot = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=2)
    land(pstore, zip_slot, plain("a"))  # a plain profile PUT to a zip slot
    land(pstore, plain_slot, zip_of({"a.bin": plain("b")}))  # a zip PUT to a plain slot
    pstore.learn_landed(session)
    recorded = [pstore.get_upload(zip_slot.id), pstore.get_upload(plain_slot.id)]
    assert [(u.ingest_state, u.sha256) for u in recorded] == [
        ("pending", sha(plain("a"))),
        ("invalid", sha(zip_of({"a.bin": plain("b")}))),
    ]
    assert recorded[1].ingest_error.startswith("it is not a well-formed whylogs profile (")
    assert len(pstore.list_profiles(session)) == 2


# -- storing a received body ---------------------------------------------------------------------


def test_a_slot_is_made_with_its_format(estore):
    session = estore.create_session("u").id
    assert estore.create_upload(session, "batch", ttl_seconds=60, format="zip").format == "zip"
    assert estore.create_upload(session, "batch", ttl_seconds=60).format is None


def test_slot_limits_go_through_to_the_metadata_store(estore):
    session = estore.create_session("u").id
    specs = [NewUpload("batch", dataset_timestamp=1)] * 2
    assert len(estore.create_uploads(session, specs, ttl_seconds=60, max_open=2)) == 2
    with pytest.raises(SlotLimitError):
        estore.create_uploads(session, specs[:1], ttl_seconds=60, max_open=2)
    with pytest.raises(SlotLimitError):
        estore.create_uploads(session, specs[:1], ttl_seconds=60, max_profiles=2)
    assert len(estore.create_uploads(session, specs[:1], ttl_seconds=60, max_open=3, max_profiles=3)) == 1


@pytest.mark.parametrize("how", ["data", "file"])
def test_a_slot_read_a_moment_ago_is_not_read_again(estore, tmp_path, monkeypatch, how):
    session = estore.create_session("u").id
    upload = new_slot(estore, session)
    opened = estore.open_upload(upload.id, sha(plain()))
    reads: list[str] = []
    real = estore.metadata.open_upload_and_duplicate
    monkeypatch.setattr(estore.metadata, "open_upload_and_duplicate", lambda *a: reads.append(a[0]) or real(*a))
    source = tmp_path / "body"
    source.write_bytes(plain())
    if how == "data":
        outcome = estore.store_profile_data(upload.id, plain(), sha256=sha(plain()), opened=opened)
    else:
        outcome = estore.store_profile_file(upload.id, source, size=len(plain()), sha256=sha(plain()), opened=opened)
    assert reads == []
    assert outcome.upload.path == blob_key(session, upload.id, sha(plain()))


@pytest.mark.parametrize("how", ["data", "file"])
def test_the_segment_a_header_names_is_kept_for_a_slot_that_named_none(estore, tmp_path, how):
    session = estore.create_session("u").id
    untagged = put(estore, session, plain())
    upload = new_slot(estore, session)
    source = tmp_path / "body"
    source.write_bytes(plain())
    tags = (("k", "v"),)
    if how == "data":
        outcome = estore.store_profile_data(upload.id, plain(), sha256=sha(plain()), segment_tags=tags)
    else:
        outcome = estore.store_profile_file(
            upload.id, source, size=len(plain()), sha256=sha(plain()), segment_tags=tags
        )
    assert (outcome.duplicate_of, outcome.upload.segment_tags) == (None, tags), f"not a duplicate of {untagged.id}"
    assert outcome.upload.path == blob_key(session, upload.id, sha(plain()))


@pytest.mark.parametrize("repeated", [False, True], ids=["new bytes", "bytes of a stored profile"])
def test_a_file_stored_with_a_landing_time_is_recorded_as_landed_then(estore, tmp_path, repeated):
    """An import gives each profile the time it landed at (``stored_at``): recorded as given, for
    new bytes and for bytes that repeat a profile already stored (kept once, as its duplicate)."""
    session = estore.create_session("u").id
    original = put(estore, session, plain()) if repeated else None
    upload = new_slot(estore, session)
    source = tmp_path / "body"
    source.write_bytes(plain())
    outcome = estore.store_profile_file(upload.id, source, size=len(plain()), sha256=sha(plain()), stored_at=1234)
    assert outcome.duplicate_of == (original.id if original is not None else None)
    assert estore.get_upload(upload.id).stored_at == 1234


def test_derived_values_are_written_and_dropped_through_the_store(estore):
    session = estore.create_session("u").id
    estore.put_derived(session, "timeline/x/old", b"old")
    estore.write_derived(session, [("put", "timeline/x/new", b"new"), ("drop", "timeline/x/old", None)])
    assert (estore.get_derived(session, "timeline/x/new"), estore.get_derived(session, "timeline/x/old")) == (
        b"new",
        None,
    )


def test_a_store_remembers_the_bytes_its_puts_checked(estore):
    estore.checked.note(sha(plain()), 10)
    assert estore.checked.vouches(sha(plain()), 10) and not estore.checked.vouches(sha(b"other"), 10)


# -- reading the bytes of a profile that a client PUT straight to the blob store -----------------


@pytest.fixture
def learned(pstore) -> UploadRecord:
    """A profile a presigned PUT left, learned and recorded."""
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, plain())
    [record] = pstore.learn_landed(session)
    return record


def test_presigned_bytes_are_read_when_they_are_the_checked_ones(pstore, learned):
    assert (learned.size, learned.sha256) == (len(plain()), sha(plain()))
    assert pstore.read_profile_bytes(learned) == plain()


@pytest.mark.parametrize(
    "change", [{"sha256": None}, {"size": None}, {"sha256": sha(plain()).upper()}, {"sha256": sha(plain())[:-1]}]
)
def test_presigned_bytes_recorded_without_a_checked_sha256_are_not_read(pstore, learned, change):
    with pytest.raises(StoredBytesChangedError, match=rf"^upload {learned.id} was recorded without a checked sha256$"):
        pstore.read_profile_bytes(dataclasses.replace(learned, **change))


@pytest.mark.parametrize(
    "replacement", [plain("x"), plain() + b"\x00", plain()[:-1]], ids=["same size", "longer", "shorter"]
)
def test_presigned_bytes_that_changed_are_not_read_and_a_warning_says_so(pstore, learned, replacement, caplog):
    pstore.blobs.put_bytes(learned.path, replacement)
    with (
        caplog.at_level(logging.WARNING, logger="whylogs_songbird.server"),
        pytest.raises(
            StoredBytesChangedError,
            match=rf"^the stored bytes of upload {learned.id} are not the ones that were checked$",
        ),
    ):
        pstore.read_profile_bytes(learned)
    assert [r.getMessage() for r in caplog.records] == [
        f"the stored bytes of upload {learned.id} are not the ones that were checked; not read"
    ]


def test_presigned_bytes_that_are_gone_are_not_found(pstore, learned):
    pstore.blobs.delete(learned.path)
    with pytest.raises(FileNotFoundError, match=rf"^upload {learned.id} has no stored bytes$"):
        pstore.read_profile_bytes(learned)


def test_the_embedded_store_reads_its_own_bytes_as_they_are(estore):
    upload = put(estore, estore.create_session("u").id, plain())
    estore.blobs.put_bytes(upload.path, b"changed")
    assert estore.read_profile_bytes(upload) == b"changed"


# -- recording landed bytes ----------------------------------------------------------------------


def test_landed_bytes_keep_the_segment_their_header_names(pstore):
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, segmented("a", k="1"))
    [record] = pstore.learn_landed(session)
    assert record.segment_tags == (("k", "1"),)


@pytest.mark.parametrize("same", [True, False], ids=["same bytes", "other bytes"])
def test_landed_bytes_another_put_recorded_during_the_copy_leave_that_record_alone(pstore, same):
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    landed = land(pstore, upload, plain())
    theirs = plain() if same else plain("x")
    pstore.blobs.after["copy_version"] = lambda: pstore.store_profile_data(upload.id, theirs, sha256=sha(theirs))
    assert pstore.learn_landed(session) == []
    record = pstore.get_upload(upload.id)
    assert record.path == blob_key(session, upload.id, sha(theirs))
    assert keys(pstore) == sorted([record.path, landed])
    assert pstore.read_profile_bytes(record) == theirs


# -- when the background look takes a session next ----------------------------------------------


def look(store: Store, session_id: str) -> tuple[float, float]:
    """(wait, due - looked) of the session's next background look."""
    entry = store._next_look[session_id]
    return entry.wait, round(entry.due - entry.looked, 6)


def make_due(store: Store, session_id: str) -> None:
    store._next_look[session_id].due = 0.0


def test_idle_slots_are_looked_at_after_waits_that_double_up_to_a_minute(pstore):
    session = pstore.create_session("u").id
    new_slot(pstore, session)
    waits = []
    for _ in range(8):
        assert pstore.learn_landed() == []
        waits.append(look(pstore, session))
        make_due(pstore, session)
    assert waits == [(w, w) for w in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0)]


def test_a_session_where_bytes_landed_is_looked_at_again_at_once(pstore):
    session = pstore.create_session("u").id
    first = new_slot(pstore, session)
    new_slot(pstore, session)
    pstore.learn_landed()
    make_due(pstore, session)
    land(pstore, first, plain())
    assert [u.id for u in pstore.learn_landed()] == [first.id]
    assert session not in pstore._next_look


def test_a_session_with_another_hosts_live_learn_claim_is_looked_at_again_in_a_second(pstore):
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, plain())
    other = SqliteMetadataStore(pstore.data_dir / "songbird.sqlite3")
    try:
        other.owner = "host-b"
        assert other.claim_landed([upload.id], lease_ms=3_600_000) == {upload.id}
    finally:
        other.close()
    for _ in range(2):  # the wait does not grow
        assert pstore.learn_landed() == []
        assert look(pstore, session) == (0.0, 1.0)
        make_due(pstore, session)


def test_a_hosts_own_learn_claim_is_not_another_hosts(pstore):
    pstore.metadata.owner = "host-a"
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, plain())
    assert pstore.metadata.claim_landed([upload.id], lease_ms=3_600_000) == {upload.id}
    assert pstore.learn_landed() == []  # its own live claim: the bytes are seen, left for the claim to end
    assert session not in pstore._next_look


def test_a_session_not_due_is_passed_over_and_the_next_one_looked_at(pstore):
    idle, busy = pstore.create_session("u").id, pstore.create_session("u").id
    waiting = new_slot(pstore, idle)
    pstore.learn_landed()
    upload = new_slot(pstore, busy)
    sql(pstore, "UPDATE uploads SET created_at = created_at + 1000 WHERE id = ?", (upload.id,))
    assert [u.id for u in pstore.metadata.unstored_uploads()] == [waiting.id, upload.id]
    land(pstore, upload, plain())
    assert [u.id for u in pstore.learn_landed()] == [upload.id]


def test_the_background_claims_landed_uploads_in_batches(pstore, monkeypatch):
    monkeypatch.setattr(store_module, "LEARN_CLAIM_BATCH", 2)
    session = pstore.create_session("u").id
    uploads = [new_slot(pstore, session) for _ in range(3)]
    for upload in uploads:
        land(pstore, upload, plain(upload.id[-1]))
    claims: list[int] = []
    real = pstore.metadata.claim_landed
    monkeypatch.setattr(pstore.metadata, "claim_landed", lambda ids, **kw: claims.append(len(ids)) or real(ids, **kw))
    assert len(pstore.learn_landed()) == 3
    assert claims == [2, 1]


def test_a_stopping_request_look_records_nothing(pstore):
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, plain())
    assert pstore.learn_landed(session, stop=lambda: True) == []
    assert pstore.get_upload(upload.id).stored_at is None


def test_a_nudge_makes_the_next_look_due_a_second_after_the_last_and_wakes_the_worker(pstore):
    session = pstore.create_session("u").id
    new_slot(pstore, session)
    for _ in range(3):
        pstore.learn_landed()
        make_due(pstore, session)
    pstore._next_look[session].due = pstore._next_look[session].looked + 4.0
    woken: list[int] = []
    pstore.add_look_waker(lambda: woken.append(1))
    pstore.nudge_landed(session)
    assert look(pstore, session) == (0.0, 1.0)
    assert woken == [1]


def test_a_request_awaits_no_upload_it_does_not_name(pstore):
    session = pstore.create_session("u").id
    new_slot(pstore, session, ts=5)
    assert pstore.awaits_upload(session, "6") is False
    assert pstore.awaits_upload(session, "5") is True


# -- scans for bytes without a row ---------------------------------------------------------------


def stray(store: Store, upload: UploadRecord, data: bytes = b"stray", age_ms: int | None = None) -> str:
    """Bytes of ``upload`` that no row records (an older version); ``age_ms``: before the clock's now."""
    key = blob_key(upload.session_id, upload.id, sha(data))
    store.blobs.put_bytes(key, data)
    if age_ms is not None:
        stamp = (NOW_MS - age_ms) * 1_000_000
        os.utime(store.blobs.path(key), ns=(stamp, stamp))
    return key


def test_a_due_scan_takes_its_turn_once_an_interval_and_logs_what_it_removed(estore, clock, caplog):
    upload = put(estore, estore.create_session("u").id, plain())
    first = stray(estore, upload)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server"):
        assert estore.scan_orphans_if_due(interval_seconds=7200).orphan_blobs == [first]
    assert [r.getMessage() for r in caplog.records] == [
        "reconciled the store in the background: 0 temporary files and 1 profile files without a row removed,"
        " 0 rows without bytes reset"
    ]
    assert sql(estore, "SELECT value FROM meta WHERE name = 'turn:orphan_scan'") == [(str(NOW_MS),)]
    clock.now = NOW_MS + 7_200_000 - 1
    assert estore.scan_orphans_if_due(interval_seconds=7200) is None
    clock.now = NOW_MS + 7_200_000
    assert estore.scan_orphans_if_due(interval_seconds=7200) is not None


def test_a_due_scan_stops_when_asked(estore):
    upload = put(estore, estore.create_session("u").id, plain())
    key = stray(estore, upload)
    assert estore.scan_orphans_if_due(stop=lambda: True).orphan_blobs == []
    assert key in keys(estore)


def test_a_scan_leaves_bytes_younger_than_its_grace(estore, clock):
    upload = put(estore, estore.create_session("u").id, plain())
    old = stray(estore, upload, b"old", age_ms=100_000_000)
    young = stray(estore, upload, b"young", age_ms=100_000_000 - 1)
    kept = stray(estore, upload, b"kept", age_ms=100_000_000 - 50_000)
    assert estore.scan_orphans(grace_seconds=100_000).orphan_blobs == [old]
    assert sorted([young, kept, upload.path]) == keys(estore)
    assert sorted(estore.scan_orphans(stop=lambda: True).orphan_blobs) == []
    assert sorted(estore.scan_orphans().orphan_blobs) == sorted([young, kept])


def test_a_scan_asks_to_stop_only_before_a_removal(estore):
    put(estore, estore.create_session("u").id, plain())
    asked: list[int] = []
    assert estore.scan_orphans(stop=lambda: bool(asked.append(1))) == ReconcileReport()
    assert asked == []


def test_a_row_recorded_again_while_its_missing_bytes_are_looked_for_is_kept(estore):
    session = estore.create_session("u").id
    upload = put(estore, session, plain())
    estore.blobs.delete(upload.path)
    again = plain("x")
    estore.blobs.after["exists"] = lambda: estore.store_profile_data(upload.id, again, sha256=sha(again))
    assert estore.scan_orphans().rows_without_bytes == []
    assert estore.get_upload(upload.id).path == blob_key(session, upload.id, sha(again))


def test_bytes_recorded_while_the_scan_listed_them_are_kept(estore):
    upload = new_slot(estore, estore.create_session("u").id)
    key = stray(estore, upload, plain())
    estore.blobs.after["list_stamped"] = lambda: estore.metadata.mark_stored(
        upload.id, key=key, size=len(plain()), sha256=sha(plain())
    )
    assert estore.scan_orphans().orphan_blobs == []
    assert keys(estore) == [key]


def test_a_checked_copy_of_a_presigned_slot_is_kept_until_its_url_expired_an_hour_ago(pstore, clock):
    session = pstore.create_session("u").id
    gone, kept = new_slot(pstore, session), new_slot(pstore, session)
    expire_at(pstore, gone, NOW_S - 3601)
    expire_at(pstore, kept, NOW_S - 3600)
    copies = [stray(pstore, gone, plain("g")), stray(pstore, kept, plain("k"))]
    assert pstore.scan_orphans().orphan_blobs == copies[:1]
    assert keys(pstore) == copies[1:]


# -- what only a seam shows: the storage a config opens, the ingest listener ----------------------


def test_a_config_naming_shared_storage_opens_it_for_this_host(tmp_path, monkeypatch):
    opened: list[StorageSpec] = []

    def fake_open_storage(spec: StorageSpec):
        opened.append(spec)
        return SqliteMetadataStore(tmp_path / "m.sqlite3"), FileBlobStore(tmp_path / "b")

    monkeypatch.setattr(store_module, "open_storage", fake_open_storage)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "health.token").write_text("a" * 64 + "\n")
    config = ServerConfig(
        data_dir=tmp_path / "d",
        database_url="postgresql://127.0.0.1:1/songbird",
        blob_store="s3://bucket",
        s3_endpoint_url="http://127.0.0.1:9",
    )
    Store.open(config).close()
    [spec] = opened
    assert (spec.data_dir, spec.database_url, spec.blob_store, spec.s3_endpoint_url, spec.owner) == (
        tmp_path / "d",
        "postgresql://127.0.0.1:1/songbird",
        "s3://bucket",
        "http://127.0.0.1:9",
        "986bbd8b86af707d",
    )


class _Listening(_NotSql):
    """A metadata store that can tell when other processes announce ingest work."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def listen_ingest(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return self.close


def test_the_ingest_listener_is_the_metadata_stores(estore):
    assert estore.listen_ingest(lambda: None) is None
    metadata = _Listening()
    store = Store(metadata=metadata, blobs=_NotSql())  # type: ignore[arg-type]

    def callback() -> None:
        return None

    assert store.listen_ingest(callback) == metadata.close
    assert metadata.callbacks == [callback]


def test_an_existing_dataset_container_is_found_without_a_write(estore, monkeypatch):
    made = estore.dataset_container("org-1", "model-1")
    writes: list[tuple[str, str]] = []
    monkeypatch.setattr(estore.metadata, "dataset_container", lambda *a: writes.append(a))
    assert estore.dataset_container("org-1", "model-1") == made
    assert writes == []


# -- more of deletion and the look for landed bytes ---------------------------------------------------


def test_deleting_or_moving_a_containers_uploads_learns_no_other_sessions_landed_bytes(pstore):
    other = pstore.create_session("u").id
    waiting = new_slot(pstore, other)
    land(pstore, waiting, plain())
    for container in (pstore.dataset_container("org-1", "m").id, pstore.create_session("u").id):
        pstore.delete_uploads(container)
        pstore.move_stored_uploads(container, pstore.dataset_container("org-1", "n").id)
    assert pstore.get_upload(waiting.id).stored_at is None


def test_bytes_under_a_directory_named_by_another_kind_of_id_are_no_sessions(estore):
    not_a_session, upload = new_id("log"), new_id("log")
    key = f"profiles/{not_a_session}/{upload}.bin"
    estore.blobs.put_bytes(key, b"x")
    assert estore.delete_session_bytes(not_a_session) == []
    assert estore.delete_upload_bytes(not_a_session, upload) == []
    assert keys(estore) == [key]


def test_the_sweep_finds_many_landed_slots_of_a_session_by_listing_it(pstore, clock):
    session = pstore.create_session("u").id
    slots = expired_slots(pstore, session, *[5000] * 9)
    for upload in slots:
        land(pstore, upload, plain(upload.id[-1]))
    assert pstore.sweep_expired_slots() == 0
    assert [pstore.get_upload(u.id).stored_at is not None for u in slots] == [True] * 9


def test_a_failed_read_of_landed_bytes_ends_the_learn_claim(pstore):
    session = pstore.create_session("u").id
    upload = new_slot(pstore, session)
    land(pstore, upload, plain())

    def fail() -> None:
        raise OSError("the object store went away")

    pstore.blobs.after["read_version"] = fail
    with pytest.raises(OSError, match="went away"):
        pstore.learn_landed()
    assert sql(pstore, "SELECT learn_lease FROM uploads WHERE id = ?", (upload.id,)) == [(None,)]


def test_a_refused_landed_zip_another_put_recorded_meanwhile_leaves_that_record_alone(pstore):
    session = pstore.create_session("u").id
    upload = pstore.create_upload(session, "batch", ttl_seconds=600, dataset_timestamp=100, format="zip")
    landed = land(pstore, upload, zip_of({"bad.bin": b"not a profile"}))
    pstore.blobs.after["put_bytes"] = lambda: pstore.store_profile_data(upload.id, plain(), sha256=sha(plain()))
    assert pstore.learn_landed(session) == []
    record = pstore.get_upload(upload.id)
    assert (record.path, record.ingest_state) == (blob_key(session, upload.id, sha(plain())), "pending")
    assert keys(pstore) == sorted([record.path, landed])


def test_an_object_named_like_no_upload_is_removed_whatever_its_name(pstore):
    key = f"profiles/{new_id('session')}/stray.bin"
    pstore.blobs.strays[key] = 0
    assert pstore.scan_orphans().orphan_blobs == [key]
    assert pstore.blobs.strays == {}
