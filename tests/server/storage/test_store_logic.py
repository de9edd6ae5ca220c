"""The server's store (server/store.py) and its SQL metadata store (server/storage/sql.py), in process.

The HTTP tests reach the store through the routes; these tests call it directly, on the real
embedded components (SQLite in WAL mode and the file blob store in a temporary data dir), so that
scripts/mutation can judge both modules in seconds. They pin down what the routes cannot see
quickly: exact records, orderings and limits, duplicates, the typed errors, what reconciliation
fixes, ingest claims and leases, summaries, derived artefacts and operation counts.

Storing a profile is checked only through the store's public methods and their outcomes, so that
the PUT path may be reshaped underneath. Timestamps that decide an order are set with SQL on a
second connection to the same database file; nothing here sleeps or reads the clock to judge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FIRST_SCHEMA
from stored_profiles import profile_path, store_profile_bytes

from whylogs_songbird.server import store as store_module
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.storage.base import SessionGoneError
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.sql import POSTGRESQL, SCHEMA_VERSION, SQLITE, Dialect
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import (
    LANDED_GRACE_SECONDS,
    NewUpload,
    ReconcileReport,
    SessionClaimedError,
    Store,
    UnknownUploadError,
    UploadRecord,
    blob_key,
    now_ms,
    parse_timestamp_selector,
)

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast(
    "whylogs_songbird/server/store.py", "whylogs_songbird/server/storage/sql.py", "whylogs_songbird/server/counters.py"
)

#: sha256 of b"abc" and of b"xyz"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
XYZ = "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"
#: a well-formed serialized profile of one column without chunks (17 bytes), and its sha256
PROFILE = b"WHY1\x00\x0b\n\x02(\x01\x12\x05\n\x01c\x12\x00"
PROFILE_SHA = hashlib.sha256(PROFILE).hexdigest()
UNKNOWN_LOG = "log-" + "Z" * 24
UNKNOWN_SESSION = "session-" + "Z" * 24
OPERATIONS = {
    "create_session": 0,
    "upload": 0,
    "reference": 0,
    "references": 0,
    "observatory_link": 0,
    "get_session": 0,
    "claim": 0,
    "put": 0,
    "observatory_page": 0,
}


class PresigningFiles(FileBlobStore):
    """Files standing in for S3: presigned PUT URLs (recorded), and keys whose bytes vanish right
    after their size is read (a race with S3)."""

    presigns_uploads = True

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.presigned: list[tuple[str, int]] = []
        self.listings: list[str] = []  # see ListingPresigningFiles
        self.vanish: set[str] = set()

    def presign_put(self, key, ttl_seconds):
        self.presigned.append((key, ttl_seconds))
        return f"http://127.0.0.1:9/{key}?ttl={ttl_seconds}"

    def size(self, key):
        size = super().size(key)
        if key in self.vanish:
            self.delete(key)
        return size


class ListingPresigningFiles(PresigningFiles):
    """:class:`PresigningFiles` that can also list a session's sizes in one request (recorded)."""

    def list_sizes(self, prefix):
        self.listings.append(prefix)
        return [(key, self.size(key)) for key in self.list_keys(prefix)]


class CopyHookedFiles(PresigningFiles):
    """:class:`PresigningFiles` that run ``before_copy`` / ``after_copy`` once around the copy of
    checked landed bytes (what a client's PUT or another process does in between), and replace
    the bytes of keys in ``grow`` by larger ones right after their size was read."""

    before_copy: Callable[[], object] | None = None
    after_copy: Callable[[], object] | None = None
    grow: dict[str, bytes]
    #: None: copies as asked and vouches for it; else copies these bytes and does not vouch
    #: (an S3 store whose copy has another ETag, or that ignored the condition)
    unvouched_copy: bytes | None = None

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.grow = {}

    def size(self, key):
        size = super().size(key)
        if key in self.grow:
            self.put_bytes(key, self.grow.pop(key))
        return size

    def copy_version(self, source, target, tag):
        hook, self.before_copy = self.before_copy, None
        if hook is not None:
            hook()
        if self.unvouched_copy is None:
            super().copy_version(source, target, tag)
        else:
            self.put_bytes(target, self.unvouched_copy)
        hook, self.after_copy = self.after_copy, None
        if hook is not None:
            hook()
        return self.unvouched_copy is None


class HookedFiles(FileBlobStore):
    """Files that run ``during_put`` once, right after some bytes are written: what another request
    does while a PUT is between its bytes and its row."""

    during_put: Callable[[], object] | None = None

    def _written(self) -> None:
        hook, self.during_put = self.during_put, None
        if hook is not None:
            hook()

    def put_bytes(self, key, data):
        super().put_bytes(key, data)
        self._written()

    def put_file(self, key, source):
        super().put_file(key, source)
        self._written()


class NoFiles:
    """A blob store keeping no local files (as S3), for what needs none of its methods."""

    def close(self) -> None:
        return None


@pytest.fixture
def pstore(tmp_path: Path) -> Iterator[Store]:
    """A store whose blob store presigns (as S3 does)."""
    s = presigning_store(tmp_path / "data")
    yield s
    s.close()


def presigning_store(data: Path, blobs: type[PresigningFiles] = PresigningFiles) -> Store:
    return Store(data, metadata=SqliteMetadataStore(data / "songbird.sqlite3"), blobs=blobs(data))


def sql(store: Store, statement: str, params: tuple = ()) -> list[tuple]:
    """Run ``statement`` on a second connection to the store's database (committed)."""
    assert store.data_dir is not None
    with contextlib.closing(sqlite3.connect(store.data_dir / "songbird.sqlite3")) as conn, conn:
        return conn.execute(statement, params).fetchall()


def slot(store: Store, session_id: str, kind="batch", ts: int | None = 100, tags=(), ttl: int = 600) -> UploadRecord:
    return store.create_upload(session_id, kind, ttl_seconds=ttl, dataset_timestamp=ts, segment_tags=tags)


def stored(store: Store, session_id: str, data: bytes = b"abc", **options) -> UploadRecord:
    upload = slot(store, session_id, **options)
    return store.store_profile_data(upload.id, data, sha256=hashlib.sha256(data).hexdigest()).upload


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def flushers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "songbird-counts"}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- selectors and keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("0", 0),
        ("7", 7),
        ("-5", -5),
        ("1700000000000", 1_700_000_000_000),
        ("0001", 1),
        ("9223372036854775807", 9_223_372_036_854_775_807),
        ("-9223372036854775808", -9_223_372_036_854_775_808),
        ("9223372036854775808", None),
        ("-9223372036854775809", None),
        ("9999999999999999999", None),
        ("12345678901234567890", None),
        ("", None),
        ("-", None),
        ("+1", None),
        ("1.5", None),
        ("1e3", None),
        (" 1", None),
        ("1\n", None),
        ("١٢", None),
        ("log-" + "A" * 20, None),
    ],
)
def test_a_timestamp_selector_is_ascii_digits_in_the_signed_64_bit_range(selector, expected):
    assert parse_timestamp_selector(selector) == expected


def test_a_blob_key_names_the_session_the_upload_and_the_sha256_prefix():
    session, upload = "session-" + "A" * 20, "log-" + "B" * 20
    assert blob_key(session, upload) == f"profiles/{session}/{upload}.bin"
    assert blob_key(session, upload, ABC) == f"profiles/{session}/{upload}.ba7816bf8f01cfea.bin"
    assert blob_key(session, "ref-" + "C" * 20) == f"profiles/{session}/ref-{'C' * 20}.bin"


@pytest.mark.parametrize(
    "session, upload, sha256, message",
    [
        ("log-" + "A" * 20, "log-" + "B" * 20, None, f"not a server-made id: 'log-{'A' * 20}'"),
        ("session-../x", "log-" + "B" * 20, None, "not a server-made id: 'session-../x'"),
        ("session-" + "A" * 20, "x", None, "not a server-made id: 'x'"),
        ("session-" + "A" * 20, "log-" + "B" * 20, ABC.upper(), "not a sha256 hex digest"),
        ("session-" + "A" * 20, "log-" + "B" * 20, ABC[:63], "not a sha256 hex digest"),
        ("session-" + "A" * 20, "log-" + "B" * 20, ABC + "0", "not a sha256 hex digest"),
        ("session-" + "A" * 20, "log-" + "B" * 20, "", "not a sha256 hex digest"),
    ],
)
def test_a_blob_key_is_refused_for_anything_but_server_ids_and_a_hex_digest(session, upload, sha256, message):
    with pytest.raises(ValueError) as caught:
        blob_key(session, upload, sha256)
    assert str(caught.value) == message


def test_a_reconcile_report_is_true_when_something_was_fixed():
    assert not ReconcileReport()
    assert not ReconcileReport(released_claims=3), "released claims alone are routine, not a repair"
    for fixed in ("temp_files", "orphan_blobs", "rows_without_bytes"):
        assert ReconcileReport(**{fixed: ["x"]})


# -- opening and closing ----------------------------------------------------------------------------


def test_a_store_needs_a_data_dir_or_both_stores(tmp_path):
    message = "Store needs a data_dir, or both a metadata store and a blob store"
    for options in ({}, {"blobs": FileBlobStore(tmp_path / "b")}):
        with pytest.raises(ValueError) as caught:
            Store(**options)
        assert str(caught.value) == message


def test_the_embedded_store_is_opened_in_the_data_dir(tmp_path):
    store = Store(str(tmp_path / "data"))
    try:
        assert store.data_dir == tmp_path / "data"
        assert repr(store) == (
            f"Store(SqliteMetadataStore('{tmp_path / 'data' / 'songbird.sqlite3'}'), "
            f"FileBlobStore('{tmp_path / 'data'}'))"
        )
        assert (store.max_columns, store.max_upload_bytes) == (20_000, 268_435_456)
        assert store.presigns is False
    finally:
        store.close()


def test_given_stores_are_used_and_a_missing_one_is_opened_in_the_data_dir(tmp_path):
    metadata = SqliteMetadataStore(tmp_path / "m.sqlite3")
    store = Store(tmp_path / "data", metadata=metadata)
    try:
        assert store.metadata is metadata
        assert isinstance(store.blobs, FileBlobStore) and store.blobs.root == tmp_path / "data"
    finally:
        store.close()
    blobs = FileBlobStore(tmp_path / "b")
    store = Store(metadata=SqliteMetadataStore(tmp_path / "m2.sqlite3"), blobs=blobs)
    try:
        assert store.blobs is blobs and store.data_dir is None
    finally:
        store.close()


def test_store_open_takes_the_limits_from_the_config(tmp_path):
    store = Store.open(ServerConfig(data_dir=tmp_path / "d", max_columns=7, max_upload_bytes=9))
    try:
        assert (store.max_columns, store.max_upload_bytes) == (7, 9)
        assert store.data_dir == tmp_path / "d" and (tmp_path / "d" / "songbird.sqlite3").is_file()
    finally:
        store.close()
    store = Store.open(ServerConfig(data_dir=tmp_path / "e"))
    try:
        assert (store.max_columns, store.max_upload_bytes) == (20_000, 268_435_456)
    finally:
        store.close()


def test_store_open_uses_the_stores_the_config_names(tmp_path):
    config = ServerConfig(
        data_dir=tmp_path / "d", database_url=f"sqlite://{tmp_path}/m.sqlite3", blob_store=f"file://{tmp_path}/b"
    )
    store = Store.open(config)
    try:
        assert repr(store) == f"Store(SqliteMetadataStore('{tmp_path}/m.sqlite3'), FileBlobStore('{tmp_path}/b'))"
        assert store.data_dir == tmp_path / "d" and not (tmp_path / "d").exists()
    finally:
        store.close()


def test_closing_closes_the_database_and_twice_is_a_no_op(tmp_path):
    store = Store(tmp_path / "data")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.session_count()
    store.count("put")  # after closing: kept in memory, never written to the closed database
    store.close()


# -- operation counts ------------------------------------------------------------------------------


def test_counts_are_added_up_per_operation_and_every_operation_is_named(store):
    for operation in ("put", "put", "claim", "put", "something_else"):
        store.count(operation)
    expected = {**OPERATIONS, "put": 3, "claim": 1, "something_else": 1}
    assert store.stats() == expected
    assert store.stats() == expected, "reading the counts does not count them again"


def test_counts_are_written_by_one_background_daemon_thread(store):
    before = flushers()
    store.count("put")
    store.count("put")
    store.count("claim")
    started = flushers() - before
    assert [t.daemon for t in started] == [True]
    wait_for(lambda: store.metadata.stats()["put"] == 2, "the counts in the database without stats()")
    assert store.metadata.stats()["claim"] == 1
    store.close()
    assert [t.is_alive() for t in started] == [False], "closing ends the flusher before the database"


def test_a_forked_process_starts_its_own_flusher(store, monkeypatch):
    store.count("put")
    monkeypatch.setattr(store.counts, "_flusher_pid", -1)  # as in a child forked from this process
    before = flushers()
    store.count("put")
    assert len(flushers() - before) == 1
    assert store.stats()["put"] == 2


def test_closing_writes_the_counts_not_written_yet(tmp_path):
    store = Store(tmp_path / "data")
    for _ in range(3):
        store.count("upload")
    store.close()
    reopened = Store(tmp_path / "data")
    try:
        assert reopened.stats()["upload"] == 3
    finally:
        reopened.close()


def test_a_failed_write_keeps_the_counts_for_the_next_one(tmp_path, caplog):
    store = Store(tmp_path / "data")
    store.metadata.close()
    with caplog.at_level(logging.ERROR, logger="whylogs_songbird.server"):
        store.count("put")
        with pytest.raises(sqlite3.ProgrammingError):
            store.flush_counts()
        wait_for(
            lambda: "writing operation counts failed" in [r.getMessage() for r in caplog.records],
            "the background flush to log its failure",
        )
    store.metadata = SqliteMetadataStore(tmp_path / "data" / "songbird.sqlite3")
    try:
        assert store.stats()["put"] == 1
    finally:
        store.close()


def test_a_reset_drops_written_counts_and_counts_not_written_yet(store):
    store.count("put")
    store.flush_counts()
    store.count("put")
    store.count("claim")
    store.reset_stats()
    assert store.stats() == OPERATIONS
    store.flush_counts()  # nothing pending: nothing written
    assert store.metadata.stats() == OPERATIONS


def test_metadata_counters_add_up_and_reset(store):
    metadata = store.metadata
    metadata.count("put")
    metadata.count("put", 4)
    metadata.add_counts({"put": 1, "claim": 2, "new": 5})
    assert metadata.stats() == {**OPERATIONS, "put": 6, "claim": 2, "new": 5}
    metadata.reset_stats()
    assert metadata.stats() == OPERATIONS


# -- sessions --------------------------------------------------------------------------------------


def test_a_new_session_is_a_guest_session_of_its_user(store):
    assert store.session_count() == 0
    session = store.create_session("user-1")
    assert re.fullmatch(r"session-[A-Za-z0-9_-]{24}", session.id)
    assert (session.user_id, session.org_id, session.claimed_at, session.claimed_org) == ("user-1", "guest", None, None)
    assert store.get_session(session.id) == session
    assert sql(store, "SELECT id, user_id, org_id, created_at FROM sessions") == [
        (session.id, "user-1", "guest", session.created_at)
    ]
    assert store.session_count() == 1
    assert store.create_session("user-1").id != session.id
    assert store.session_count() == 2


@pytest.mark.parametrize("session_id", [UNKNOWN_SESSION, "session-../x", "log-" + "A" * 24, ""])
def test_an_unknown_or_malformed_session_is_none(store, session_id):
    store.create_session("u")
    assert store.get_session(session_id) is None
    assert store.claim(session_id, "org-a") is None


def test_a_session_is_claimed_once_into_one_org(store):
    session = store.create_session("user-1")
    claimed = store.claim(session.id, "org-a")
    assert (claimed.id, claimed.user_id, claimed.org_id, claimed.claimed_org, claimed.created_at) == (
        session.id,
        "user-1",
        "org-a",
        "org-a",
        session.created_at,
    )
    assert claimed.claimed and claimed.claimed_at >= session.created_at
    assert store.get_session(session.id) == claimed
    assert store.claim(session.id, "org-b") == claimed, "a claimed session stays as it was"
    assert store.get_session(session.id) == claimed


def test_recent_sessions_are_newest_first_then_by_id_and_limited(store):
    made = [store.create_session(f"user-{i}").id for i in range(4)]
    names = ["session-" + c * 20 for c in "ABCD"]
    for old, new, created in zip(made, names, (1000, 3000, 2000, 2000)):
        sql(store, "UPDATE sessions SET id = ?, created_at = ? WHERE id = ?", (new, created, old))
    order = [s.id for s in store.recent_sessions()]
    assert order == [names[1], names[3], names[2], names[0]]
    assert [s.id for s in store.recent_sessions(2)] == [names[1], names[3]]
    assert [s.user_id for s in store.recent_sessions(1)] == ["user-1"]
    for i in range(17):
        store.create_session(f"more-{i}")
    assert store.session_count() == 21
    assert len(store.recent_sessions()) == 20
    assert len(store.metadata.recent_sessions()) == 20
    assert store.recent_sessions(21)[-1].id == names[0]


# -- upload slots ----------------------------------------------------------------------------------


def test_upload_slots_are_made_together_with_kind_alias_tags_and_expiry(store):
    session = store.create_session("u")
    specs = [
        NewUpload("batch", dataset_timestamp=1_700_000_000_000, segment_tags=(("b", "2"), ("a", "1"))),
        NewUpload("reference", alias="train"),
        NewUpload("reference"),
        NewUpload("batch", alias="named"),
    ]
    batch, named_ref, plain_ref, named_batch = uploads = store.create_uploads(session.id, specs, ttl_seconds=600)
    assert [u.id[:4] for u in uploads] == ["log-", "ref-", "ref-", "log-"]
    assert all(re.fullmatch(r"(log|ref)-[A-Za-z0-9_-]{24}", u.id) for u in uploads)
    assert len({u.id for u in uploads}) == 4
    assert [(u.kind, u.dataset_timestamp, u.alias, u.segment_tags) for u in uploads] == [
        ("batch", 1_700_000_000_000, None, (("b", "2"), ("a", "1"))),
        ("reference", None, "train", ()),
        ("reference", None, plain_ref.id, ()),  # a reference without an alias is named after its id
        ("batch", None, "named", ()),
    ]
    assert {u.session_id for u in uploads} == {session.id} and len({u.created_at for u in uploads}) == 1
    assert {u.expires_at for u in uploads} == {batch.created_at // 1000 + 600}
    assert [(u.stored_at, u.size, u.sha256, u.path, u.ingest_state, u.duplicate_of) for u in uploads] == [
        (None, None, None, None, None, None)
    ] * 4
    for upload in uploads:
        assert store.get_upload(upload.id) == upload
    assert sql(store, "SELECT segment_tags FROM uploads WHERE id = ?", (batch.id,)) == [
        ('[{"key": "b", "value": "2"}, {"key": "a", "value": "1"}]',)
    ]
    assert named_ref.alias == "train" and named_batch.alias == "named"


def test_create_upload_makes_one_slot_with_its_options(store):
    session = store.create_session("u")
    upload = store.create_upload(
        session.id, "reference", ttl_seconds=-30, dataset_timestamp=7, alias="x", segment_tags=[("k", "v")]
    )
    assert (upload.kind, upload.dataset_timestamp, upload.alias, upload.segment_tags) == (
        "reference",
        7,
        "x",
        (("k", "v"),),
    )
    assert upload.expires_at == upload.created_at // 1000 - 30
    assert store.get_upload(upload.id) == upload


def test_slots_of_a_malformed_or_unknown_session_are_refused(store):
    with pytest.raises(ValueError, match="not a server-made id"):
        store.create_uploads("log-" + "A" * 24, [NewUpload("batch")], ttl_seconds=60)
    with pytest.raises(SessionGoneError):
        store.create_uploads(UNKNOWN_SESSION, [NewUpload("batch"), NewUpload("batch")], ttl_seconds=60)
    assert sql(store, "SELECT COUNT(*) FROM uploads") == [(0,)]


@pytest.mark.parametrize("upload_id", [UNKNOWN_LOG, "ref-" + "Z" * 24, "session-" + "A" * 24, "log-../x", ""])
def test_an_unknown_or_malformed_upload_is_none(store, upload_id):
    assert store.get_upload(upload_id) is None


def test_unstored_slots_are_listed_by_expiry_and_session(store):
    one, two = store.create_session("u"), store.create_session("v")
    late = slot(store, one.id, ttl=600)
    expired = slot(store, one.id, ttl=-600)
    now = slot(store, one.id, ttl=0)
    other = slot(store, two.id, ttl=600)
    done = stored(store, one.id, ts=5)
    for upload, created in ((late, 4), (expired, 1), (now, 2), (other, 3), (done, 0)):
        sql(store, "UPDATE uploads SET created_at = ? WHERE id = ?", (created, upload.id))
    ids = [u.id for u in store.metadata.unstored_uploads()]
    assert ids == [expired.id, now.id, other.id, late.id]
    assert [u.id for u in store.metadata.unstored_uploads(expires_after=now.expires_at)] == [now.id, other.id, late.id]
    assert [u.id for u in store.metadata.unstored_uploads(session_id=one.id)] == [expired.id, now.id, late.id]
    assert [u.id for u in store.metadata.unstored_uploads(session_id=two.id, expires_after=now.expires_at)] == [
        other.id
    ]
    assert store.metadata.unstored_uploads(session_id="session-../x") == []
    assert store.metadata.unstored_uploads(expires_after=late.expires_at + 1) == []
    assert store.metadata.unstored_uploads(session_id=one.id)[0] == store.get_upload(expired.id)
    sql(store, "UPDATE uploads SET expires_at = 0 WHERE id = ?", (expired.id,))
    assert store.metadata.unstored_uploads()[0].id == expired.id, "by default every slot, even one expiring at 0"


# -- storing profiles -----------------------------------------------------------------------------


def test_stored_bytes_are_kept_under_their_hash_and_recorded_pending(store):
    session = store.create_session("u")
    upload = slot(store, session.id)
    outcome = store.store_profile_data(upload.id, b"abc", sha256=ABC)
    record = outcome.upload
    key = f"profiles/{session.id}/{upload.id}.ba7816bf8f01cfea.bin"
    assert outcome.duplicate_of is None
    assert (record.id, record.size, record.sha256, record.path, record.ingest_state, record.ingest_error) == (
        upload.id,
        3,
        ABC,
        key,
        "pending",
        None,
    )
    assert record.duplicate_of is None and record.stored and record.stored_at >= upload.created_at
    assert (record.kind, record.dataset_timestamp, record.created_at, record.expires_at) == (
        "batch",
        100,
        upload.created_at,
        upload.expires_at,
    )
    assert store.get_upload(upload.id) == record
    assert files_under(store.data_dir) == [
        key,
        "songbird.sqlite3",
        "songbird.sqlite3-shm",
        "songbird.sqlite3-wal",
        "songbird.sqlite3.write-lock",
    ]
    assert profile_path(store, record) == store.data_dir / "profiles" / session.id / f"{upload.id}.ba7816bf8f01cfea.bin"
    assert store.read_profile_bytes(record) == b"abc"
    assert store.metadata.pending_ingest() == 1


def test_a_received_file_is_moved_into_place(store):
    session = store.create_session("u")
    upload = slot(store, session.id, kind="reference", ts=None)
    fd, path = store.new_temp_file()
    os.write(fd, b"xyz")
    os.close(fd)
    assert path.parent == store.data_dir / "tmp"
    outcome = store.store_profile_file(upload.id, path, size=3, sha256=XYZ)
    assert outcome.duplicate_of is None and not path.exists()
    assert (outcome.upload.size, outcome.upload.sha256, outcome.upload.path) == (
        3,
        XYZ,
        f"profiles/{session.id}/{upload.id}.3608bca1e44ea6c4.bin",
    )
    assert store.read_profile_bytes(outcome.upload) == b"xyz" and store.get_upload(upload.id) == outcome.upload


def test_store_profile_bytes_hashes_the_bytes_itself(store):
    session = store.create_session("u")
    upload = slot(store, session.id)
    record = store_profile_bytes(store, upload.id, b"abc")
    assert (record.sha256, record.size, record.path) == (
        ABC,
        3,
        f"profiles/{session.id}/{upload.id}.ba7816bf8f01cfea.bin",
    )


@pytest.mark.parametrize("how", ["data", "file"])
def test_identical_batch_bytes_of_one_timestamp_and_segment_are_kept_once(store, how):
    session = store.create_session("u")
    first = slot(store, session.id, tags=(("a", "1"), ("b", "2")))
    second = slot(store, session.id, tags=(("b", "2"), ("a", "1")))  # the same segment, tags in another order
    kept = store.store_profile_data(first.id, b"abc", sha256=ABC).upload
    if how == "data":
        outcome = store.store_profile_data(second.id, b"abc", sha256=ABC)
    else:
        fd, path = store.new_temp_file()
        os.write(fd, b"abc")
        os.close(fd)
        outcome = store.store_profile_file(second.id, path, size=3, sha256=ABC)
    duplicate = outcome.upload
    assert outcome.duplicate_of == first.id
    assert (duplicate.id, duplicate.path, duplicate.duplicate_of, duplicate.ingest_state, duplicate.size) == (
        second.id,
        None,
        first.id,
        None,
        3,
    )
    assert duplicate.sha256 == ABC and duplicate.stored
    assert store.get_upload(second.id) == duplicate
    assert [p.id for p in store.list_profiles(session.id)] == [first.id]
    assert list(store.blobs.list_keys()) == [kept.path]
    assert store.read_profile_bytes(duplicate) == b"abc", "a duplicate reads its original's bytes"
    assert store.metadata.duplicates_of([first.id]) == 1 and store.metadata.pending_ingest() == 1
    assert store.resolve_profile(session.id, second.id) == [kept]


def test_bytes_are_kept_again_when_anything_but_the_bytes_differs(store):
    session, other = store.create_session("u"), store.create_session("v")
    first = stored(store, session.id, tags=(("a", "1"),))
    variants = [
        slot(store, session.id, ts=101, tags=(("a", "1"),)),  # another timestamp
        slot(store, session.id, tags=(("a", "2"),)),  # another segment
        slot(store, session.id, tags=()),  # no segment
        slot(store, session.id, tags=(("a", "1"), ("b", "1"))),  # a larger segment
        slot(store, other.id, tags=(("a", "1"),)),  # another session
        slot(store, session.id, kind="reference", ts=100, tags=(("a", "1"),)),  # references are never duplicates
        slot(store, session.id, kind="reference", ts=100, tags=(("a", "1"),)),
    ]
    for upload in variants:
        outcome = store.store_profile_data(upload.id, b"abc", sha256=ABC)
        assert (
            outcome.duplicate_of is None
            and outcome.upload.path == f"profiles/{upload.session_id}/{upload.id}.ba7816bf8f01cfea.bin"
        )
    different = slot(store, session.id, tags=(("a", "1"),))
    assert store.store_profile_data(different.id, b"xyz", sha256=XYZ).duplicate_of is None
    assert store.metadata.duplicates_of([first.id]) == 0
    assert len(list(store.blobs.list_keys())) == 9


def test_a_slot_past_its_expiry_still_takes_its_bytes(store):
    """Expiry is the signed (or presigned) URL's check: a PUT begun in time may finish after it."""
    session = store.create_session("u")
    upload = slot(store, session.id, ttl=-3600)
    assert store.store_profile_data(upload.id, b"abc", sha256=ABC).upload.stored


@pytest.mark.parametrize("upload_id", [UNKNOWN_LOG, "ref-" + "Z" * 24, "session-" + "A" * 24, "log-../../x", ""])
def test_bytes_for_an_unknown_upload_are_refused_and_left_alone(store, upload_id, tmp_path):
    source = tmp_path / "body"
    source.write_bytes(b"abc")
    with pytest.raises(UnknownUploadError) as caught:
        store.store_profile_data(upload_id, b"abc", sha256=ABC)
    assert str(caught.value) == upload_id
    with pytest.raises(UnknownUploadError):
        store.store_profile_file(upload_id, source, size=3, sha256=ABC)
    assert source.read_bytes() == b"abc" and list(store.blobs.list_keys()) == []


def test_bytes_for_a_claimed_session_are_refused_and_stored_ones_kept(store, tmp_path):
    session = store.create_session("u")
    upload, earlier = slot(store, session.id), stored(store, session.id, ts=1)
    store.claim(session.id, "org-a")
    source = tmp_path / "body"
    source.write_bytes(b"xyz")
    for target in (upload.id, earlier.id):
        with pytest.raises(SessionClaimedError) as caught:
            store.store_profile_data(target, b"xyz", sha256=XYZ)
        assert str(caught.value) == session.id
        with pytest.raises(SessionClaimedError):
            store.store_profile_file(target, source, size=3, sha256=XYZ)
    assert source.read_bytes() == b"xyz"
    assert store.get_upload(upload.id).stored_at is None and store.get_upload(earlier.id) == earlier
    assert list(store.blobs.list_keys()) == [earlier.path]


def test_new_bytes_for_a_stored_slot_replace_the_old_ones_and_their_summary(store):
    session = store.create_session("u")
    first = stored(store, session.id, b"abc")
    store.metadata.store_summary(first.id, ABC, b"summary")
    recorded = store.get_upload(first.id)
    again = store.store_profile_data(first.id, b"abc", sha256=ABC)  # the same bytes again: nothing changes
    assert again.upload == store.get_upload(first.id) == recorded and again.duplicate_of is None
    kept = (again.upload.path, again.upload.stored_at, again.upload.ingest_state)
    assert kept == (first.path, first.stored_at, "ready")
    assert store.read_profile_bytes(again.upload) == b"abc"
    assert store.metadata.get_summary(first.id, ABC) == b"summary", "the same bytes are not summarised again"
    replaced = store.store_profile_data(first.id, b"xyz", sha256=XYZ).upload
    assert replaced.path == f"profiles/{session.id}/{first.id}.3608bca1e44ea6c4.bin"
    assert list(store.blobs.list_keys()) == [replaced.path], "the replaced bytes are removed"
    assert store.read_profile_bytes(replaced) == b"xyz" and (replaced.size, replaced.sha256) == (3, XYZ)


def test_a_stored_slot_that_becomes_a_duplicate_loses_its_own_bytes_and_can_come_back(store):
    session = store.create_session("u")
    original = stored(store, session.id, b"abc")
    other = stored(store, session.id, b"xyz")
    outcome = store.store_profile_data(other.id, b"abc", sha256=ABC)
    assert outcome.duplicate_of == original.id and outcome.upload.path is None
    assert list(store.blobs.list_keys()) == [original.path]
    back = store.store_profile_data(other.id, b"xyz", sha256=XYZ)
    assert back.duplicate_of is None and back.upload.duplicate_of is None
    assert back.upload.path == f"profiles/{session.id}/{other.id}.3608bca1e44ea6c4.bin"
    assert back.upload.ingest_state == "pending"
    assert sorted(p.id for p in store.list_profiles(session.id)) == sorted([original.id, other.id])


def test_bytes_that_cannot_be_written_leave_the_slot_unstored(store):
    session = store.create_session("u")
    upload = slot(store, session.id)
    (store.data_dir / "profiles" / session.id / f"{upload.id}.ba7816bf8f01cfea.bin").mkdir(parents=True)
    with pytest.raises(OSError):
        store.store_profile_data(upload.id, b"abc", sha256=ABC)
    assert store.get_upload(upload.id) == upload


def hooked_store(data: Path) -> Store:
    return Store(data, metadata=SqliteMetadataStore(data / "songbird.sqlite3"), blobs=HookedFiles(data))


@pytest.mark.parametrize("how", ["data", "file"])
def test_bytes_written_while_the_session_was_claimed_are_removed(tmp_path, how):
    store = hooked_store(tmp_path / "data")
    try:
        session = store.create_session("u")
        upload = slot(store, session.id)
        store.blobs.during_put = lambda: store.claim(session.id, "org-a")
        with pytest.raises(SessionClaimedError):
            if how == "data":
                store.store_profile_data(upload.id, b"abc", sha256=ABC)
            else:
                source = tmp_path / "body"
                source.write_bytes(b"abc")
                store.store_profile_file(upload.id, source, size=3, sha256=ABC)
        assert list(store.blobs.list_keys()) == [] and store.get_upload(upload.id) == upload
    finally:
        store.close()


def test_bytes_another_put_stored_meanwhile_are_kept_once(tmp_path):
    store = hooked_store(tmp_path / "data")
    try:
        session = store.create_session("u")
        first, second = slot(store, session.id), slot(store, session.id)
        store.blobs.during_put = lambda: store.store_profile_data(first.id, b"abc", sha256=ABC)
        outcome = store.store_profile_data(second.id, b"abc", sha256=ABC)
        assert outcome.duplicate_of == first.id and outcome.upload.path is None
        assert list(store.blobs.list_keys()) == [store.get_upload(first.id).path]
    finally:
        store.close()


@pytest.mark.parametrize("how", ["data", "file"])
def test_a_repeated_profile_is_not_written_at_all(store, tmp_path, how):
    session = store.create_session("u")
    first, second = slot(store, session.id), slot(store, session.id)
    store.store_profile_data(first.id, b"abc", sha256=ABC)
    in_the_way = store.data_dir / "profiles" / session.id / f"{second.id}.ba7816bf8f01cfea.bin"
    in_the_way.mkdir()  # its bytes could not be written: they need not be
    if how == "data":
        outcome = store.store_profile_data(second.id, b"abc", sha256=ABC)
    else:
        source = tmp_path / "body"
        source.write_bytes(b"abc")
        outcome = store.store_profile_file(second.id, source, size=3, sha256=ABC)
    assert outcome.duplicate_of == first.id and in_the_way.is_dir()


def test_profile_paths_and_bytes_need_stored_bytes(store, tmp_path):
    session = store.create_session("u")
    upload = slot(store, session.id)
    with pytest.raises(ValueError) as caught:
        profile_path(store, upload)
    assert str(caught.value) == f"upload {upload.id} has no stored profile"
    with pytest.raises(FileNotFoundError) as missing:
        store.read_profile_bytes(upload)
    assert str(missing.value) == f"upload {upload.id} has no stored bytes"
    original = stored(store, session.id, ts=1)
    duplicate = stored(store, session.id, ts=1)
    store.metadata.unmark_stored([original.id])
    with pytest.raises(FileNotFoundError) as gone:
        store.read_profile_bytes(store.get_upload(duplicate.id))
    assert str(gone.value) == f"upload {original.id} has no stored bytes"

    remote = Store(metadata=SqliteMetadataStore(tmp_path / "m.sqlite3"), blobs=NoFiles())  # type: ignore[arg-type]
    try:
        with pytest.raises(ValueError, match="^this blob store keeps no local files$"):
            profile_path(remote, original)
    finally:
        remote.close()


# -- profile lookups -------------------------------------------------------------------------------


@pytest.fixture
def profiles(store):
    """A session with batches at 100 (two segments), 200, a reference, an empty slot and a duplicate."""
    session, other = store.create_session("u"), store.create_session("v")
    a = stored(store, session.id, b"a", ts=100)
    b = stored(store, session.id, b"b", ts=100, tags=(("k", "v"),))
    c = stored(store, session.id, b"c", ts=200)
    r = stored(store, session.id, b"r", kind="reference", ts=None)
    empty = slot(store, session.id, ts=100)
    duplicate = stored(store, session.id, b"a", ts=100)
    empty_ref = slot(store, session.id, kind="reference", ts=None)
    elsewhere = stored(store, other.id, b"e", ts=100)
    for upload, created in ((a, 50), (b, 40), (c, 10), (r, 30), (empty, 1), (duplicate, 2), (empty_ref, 3)):
        sql(store, "UPDATE uploads SET created_at = ? WHERE id = ?", (created, upload.id))
    records = {name: store.get_upload(u.id) for name, u in locals().items() if isinstance(u, UploadRecord)}
    return SimpleNamespace(session=session.id, other=other.id, **records)


def test_profiles_are_listed_oldest_first_without_empty_slots_or_duplicates(store, profiles):
    p = profiles
    assert store.list_profiles(p.session) == [p.c, p.r, p.b, p.a]
    assert store.list_profiles(p.session, "batch") == [p.c, p.b, p.a]
    assert store.list_profiles(p.session, kind="reference") == [p.r]
    assert store.list_profiles(p.other) == [p.elsewhere]
    assert store.list_profiles(UNKNOWN_SESSION) == [] and store.list_profiles("session-../x") == []


def test_batch_profiles_are_found_by_timestamp_and_references_by_id(store, profiles):
    p = profiles
    assert store.find_batch_profiles(p.session, 100) == [p.b, p.a]
    assert store.find_batch_profiles(p.session, 200) == [p.c]
    assert store.find_batch_profiles(p.session, 300) == [] and store.find_batch_profiles("x", 100) == []
    assert store.get_reference(p.session, p.r.id) == p.r
    assert store.get_reference(p.other, p.r.id) is None
    assert store.get_reference(p.session, p.empty_ref.id) is None
    assert store.get_reference(p.session, p.a.id) is None
    assert store.get_reference("session-../x", p.r.id) is None and store.get_reference(p.session, "ref-x") is None


def test_a_selector_names_a_timestamp_a_reference_or_a_batch_upload(store, profiles):
    p = profiles
    assert store.resolve_profile(p.session, "100") == [p.b, p.a]
    assert store.resolve_profile(p.session, "200") == [p.c]
    assert store.resolve_profile(p.session, p.r.id) == [p.r]
    assert store.resolve_profile(p.session, p.a.id) == [p.a]
    assert store.resolve_profile(p.session, p.duplicate.id) == [p.a], "a duplicate names its original"
    for none in (p.empty.id, p.empty_ref.id, p.elsewhere.id, UNKNOWN_LOG, "ref-" + "Z" * 24, p.session, "x", "1.5"):
        assert store.resolve_profile(p.session, none) == []
    assert store.resolve_profile(p.other, p.r.id) == [] and store.resolve_profile(p.other, p.a.id) == []
    assert store.resolve_profile(p.other, p.duplicate.id) == []


def test_duplicates_are_counted_and_stored_keys_listed(store, profiles):
    p = profiles
    assert store.metadata.duplicates_of([]) == 0
    assert store.metadata.duplicates_of([p.a.id]) == 1
    assert store.metadata.duplicates_of([p.a.id, p.b.id, UNKNOWN_LOG]) == 1
    stored_duplicate = stored(store, p.session, b"b", ts=100, tags=(("k", "v"),))
    assert stored_duplicate.duplicate_of == p.b.id
    assert store.metadata.duplicates_of([p.a.id, p.b.id]) == 2
    assert sorted(store.metadata.stored_keys()) == sorted((u.id, u.path) for u in (p.a, p.b, p.c, p.r, p.elsewhere))


def test_unmarking_forgets_bytes_and_summaries(store, profiles):
    p = profiles
    store.metadata.store_summary(p.a.id, p.a.sha256, b"s")
    assert store.metadata.unmark_stored([p.a.id, UNKNOWN_LOG]) == 1
    assert store.metadata.unmark_stored([]) == 0
    row = store.get_upload(p.a.id)
    assert (row.stored_at, row.size, row.sha256, row.path, row.ingest_state, row.ingest_error) == (None,) * 6
    assert store.metadata.get_summary(p.a.id, p.a.sha256) is None
    assert store.list_profiles(p.session) == [p.c, p.r, p.b]


# -- uploads that land straight in the blob store ----------------------------------------------------


def put_landed(store: Store, upload: UploadRecord, data: bytes = PROFILE) -> str:
    key = f"profiles/{upload.session_id}/{upload.id}.bin"
    store.blobs.put_bytes(key, data)
    return key


def test_presigning_is_what_the_blob_store_declares_and_urls_come_from_it(pstore):
    session = pstore.create_session("u")
    upload = slot(pstore, session.id)
    assert pstore.presigns is True
    assert pstore.blobs.presigned == []  # declared, not found out by presigning a made-up key
    assert pstore.upload_url(upload, 60) == f"http://127.0.0.1:9/profiles/{session.id}/{upload.id}.bin?ttl=60"


def test_the_embedded_blob_store_does_not_presign(store):
    session = store.create_session("u")
    upload = slot(store, session.id)
    assert store.presigns is False
    assert store.upload_url(upload, 60) is None
    put_landed(store, upload)
    assert store.learn_landed() == [] and store.learn_landed(session.id) == []
    assert store.get_upload(upload.id).stored_at is None


def test_landed_bytes_are_recorded_pending_once(pstore, caplog):
    session = pstore.create_session("u")
    first, second, empty = (slot(pstore, session.id, ts=ts) for ts in (1, 2, 3))
    for upload, created in ((first, 2), (second, 1), (empty, 3)):
        sql(pstore, "UPDATE uploads SET created_at = ? WHERE id = ?", (created, upload.id))
    key = put_landed(pstore, first)
    put_landed(pstore, second)
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server"):
        learned = pstore.learn_landed(session.id)
    assert [u.id for u in learned] == [second.id, first.id]
    assert "learned 2 uploads that landed in the blob store" in [r.getMessage() for r in caplog.records]
    record = pstore.get_upload(first.id)
    assert learned[1] == record
    checked = blob_key(session.id, first.id, PROFILE_SHA)  # a key no presigned URL names
    assert (record.path, record.size, record.sha256, record.ingest_state, record.ingest_error) == (
        checked,
        17,
        PROFILE_SHA,
        "pending",
        None,
    )
    assert pstore.blobs.get_bytes(checked) == PROFILE and not pstore.blobs.exists(key), "moved off the landed key"
    assert pstore.get_upload(empty.id).stored_at is None
    assert pstore.blobs.listings == [], "three slots: a HEAD each"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server"):
        assert pstore.learn_landed(session.id) == []
    assert caplog.records == []


def test_landed_bytes_repeating_a_stored_profile_are_a_duplicate_and_removed(pstore):
    session = pstore.create_session("u")
    first, second = slot(pstore, session.id), slot(pstore, session.id)
    put_landed(pstore, first)
    pstore.learn_landed(session.id)
    key = put_landed(pstore, second)
    [learned] = pstore.learn_landed(session.id)
    assert (learned.id, learned.duplicate_of, learned.path) == (second.id, first.id, None)
    assert pstore.blobs.exists(key) is False and pstore.get_upload(first.id).ingest_state == "pending"
    assert list(pstore.blobs.list_keys()) == [pstore.get_upload(first.id).path], "no copy of the duplicate kept"


@pytest.mark.parametrize(
    "data, limits, sha256, reason",
    [
        (b"not a profile", {}, hashlib.sha256(b"not a profile").hexdigest(),
         "it is not a well-formed whylogs profile (it does not start with the whylogs magic bytes WHY1)"),
        (PROFILE, {"max_columns": 0}, PROFILE_SHA,
         "it is not a well-formed whylogs profile (it has 1 columns, more than this server's limit of 0)"),
        (PROFILE, {"max_upload_bytes": 16}, "unread-17", "it is larger than this server's upload limit of 16 bytes"),
    ],
)  # fmt: skip
def test_landed_bytes_that_fail_the_check_or_the_limit_are_recorded_invalid(pstore, data, limits, sha256, reason):
    for name, value in limits.items():
        setattr(pstore, name, value)
    session = pstore.create_session("u")
    upload = slot(pstore, session.id)
    key = put_landed(pstore, upload, data)
    [learned] = pstore.learn_landed()
    assert learned.id == upload.id
    record = pstore.get_upload(upload.id)
    kept = None if sha256.startswith("unread-") else blob_key(session.id, upload.id, sha256)  # too large: not kept
    assert (record.path, record.size, record.sha256, record.ingest_state, record.ingest_error) == (
        kept,
        len(data),
        sha256,
        "invalid",
        reason,
    )
    assert list(pstore.blobs.list_keys()) == ([kept] if kept else []) and not pstore.blobs.exists(key)
    if kept:
        assert pstore.blobs.get_bytes(kept) == data


def test_a_stopping_worker_leaves_the_rest_of_the_landed_uploads_for_the_next_look(pstore):
    session = pstore.create_session("u")
    uploads = [slot(pstore, session.id, ts=n) for n in range(3)]
    for upload in uploads:
        put_landed(pstore, upload)
    asked = []

    def stop():
        asked.append(1)
        return len(asked) > 1  # the first upload, then stop

    first = pstore.learn_landed(stop=stop)
    assert len(first) == 1 and len(asked) == 2
    rest = pstore.learn_landed()
    assert sorted(u.id for u in first + rest) == sorted(u.id for u in uploads)


def test_landed_bytes_at_the_upload_limit_are_read(pstore):
    pstore.max_upload_bytes = 17
    session = pstore.create_session("u")
    upload = slot(pstore, session.id)
    put_landed(pstore, upload)
    [learned] = pstore.learn_landed()
    assert (learned.sha256, learned.ingest_state) == (PROFILE_SHA, "pending")


def test_slots_expired_longer_than_the_grace_are_not_looked_for(pstore):
    session = pstore.create_session("u")
    recent = slot(pstore, session.id, ts=1, ttl=-600)
    old = slot(pstore, session.id, ts=2, ttl=-7200)
    put_landed(pstore, recent)
    put_landed(pstore, old)
    assert [u.id for u in pstore.learn_landed(session.id)] == [recent.id]
    assert pstore.learn_landed(session.id, grace_seconds=1200) == []
    assert [u.id for u in pstore.learn_landed(session.id, grace_seconds=10_800)] == [old.id]


def test_learning_one_session_leaves_the_others(pstore):
    one, two = pstore.create_session("u"), pstore.create_session("v")
    mine, theirs = slot(pstore, one.id), slot(pstore, two.id)
    put_landed(pstore, mine)
    put_landed(pstore, theirs)
    assert [u.id for u in pstore.learn_landed(one.id)] == [mine.id]
    assert pstore.learn_landed("session-../x") == []
    assert [u.id for u in pstore.learn_landed()] == [theirs.id]


def test_landed_bytes_of_a_claimed_session_stay_unrecorded(pstore):
    session = pstore.create_session("u")
    upload = slot(pstore, session.id)
    key = put_landed(pstore, upload)
    pstore.claim(session.id, "org-a")
    assert pstore.learn_landed() == []
    assert pstore.get_upload(upload.id).stored_at is None and pstore.blobs.exists(key) is True


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two stores on one database and one blob directory: two server processes (or hosts)."""
    first = presigning_store(tmp_path / "data", CopyHookedFiles)
    second = presigning_store(tmp_path / "data")
    yield first, second
    first.close()
    second.close()


OTHER = b"not a profile"
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()


def test_bytes_replaced_between_their_read_and_their_copy_wait_for_the_next_look(two_stores):
    store, _ = two_stores
    session = store.create_session("u")
    upload = slot(store, session.id)
    landed = put_landed(store, upload)
    store.blobs.before_copy = lambda: put_landed(store, upload, OTHER)  # a second PUT to the same URL
    assert store.learn_landed() == []
    assert store.get_upload(upload.id).stored_at is None
    assert list(store.blobs.list_keys()) == [landed], "no copy of bytes that are no longer there"
    [learned] = store.learn_landed()  # the next look checks the bytes that are there now
    assert (learned.sha256, learned.path, learned.ingest_state) == (
        OTHER_SHA,
        blob_key(session.id, upload.id, OTHER_SHA),
        "invalid",
    )
    assert list(store.blobs.list_keys()) == [learned.path]


@pytest.mark.parametrize("replaced", [False, True], ids=["same bytes", "replaced meanwhile"])
def test_two_processes_learning_one_upload_record_it_once(two_stores, replaced):
    first, second = two_stores
    session = first.create_session("u")
    upload = slot(first, session.id)
    put_landed(first, upload)

    def the_other_process_learns():  # once the first process stalled past its learn claim
        if replaced:
            put_landed(first, upload, OTHER)
        sql(first, "UPDATE uploads SET learn_lease = 1 WHERE id = ?", (upload.id,))
        assert [u.id for u in second.learn_landed()] == [upload.id]

    first.blobs.after_copy = the_other_process_learns  # between the first's copy and its row
    assert first.learn_landed() == []
    record = first.get_upload(upload.id)
    sha = OTHER_SHA if replaced else PROFILE_SHA
    assert (record.sha256, record.path) == (sha, blob_key(session.id, upload.id, sha))
    assert list(first.blobs.list_keys()) == [record.path], "one copy, the recorded one; no landed object"
    assert first.learn_landed() == [] and second.learn_landed() == []


def test_landed_bytes_under_another_processs_live_learn_claim_are_passed_over(two_stores):
    first, second = two_stores
    session = first.create_session("u")
    upload = slot(first, session.id)
    put_landed(first, upload)
    first.blobs.before_copy = lambda: passed.append(second.learn_landed())
    passed: list[list[UploadRecord]] = []
    [learned] = first.learn_landed()
    assert passed == [[]], "the other process neither read nor recorded it"
    assert learned.path == blob_key(session.id, upload.id, PROFILE_SHA)
    assert list(first.blobs.list_keys()) == [learned.path]


def test_a_request_s_look_sees_what_another_process_is_learning_in_its_session(two_stores):
    """An export, a commit or a link must see every profile that landed before it: a look for one
    session does not pass over an upload another thread or host is recording at that moment."""
    first, second = two_stores
    session = first.create_session("u")
    upload = slot(first, session.id)
    put_landed(first, upload)
    seen: list[bool] = []
    first.blobs.before_copy = lambda: seen.append(bool(second.learn_landed(session.id)))  # under the claim
    assert first.learn_landed() == [], "recorded by the request's look meanwhile"
    record = first.get_upload(upload.id)
    assert seen == [True] and record.path == blob_key(session.id, upload.id, PROFILE_SHA)
    assert list(first.blobs.list_keys()) == [record.path]


def test_a_request_s_look_does_not_wait_for_a_learn_claim_of_a_host_that_died(two_stores):
    first, second = two_stores
    session = first.create_session("u")
    upload = slot(first, session.id)
    put_landed(first, upload)
    linked = slot(first, session.id, ts=200)
    put_landed(first, linked)
    lease = store_module.now_ms() + 600_000
    for claimed in (upload, linked):
        sql(first, "UPDATE uploads SET learn_lease = ?, learn_owner = 'a-dead-host' WHERE id = ?", (lease, claimed.id))
    assert second.learn_landed() == [], "the background passes a live claim by"
    assert second.awaits_upload(session.id, "200") is True and second.get_upload(linked.id).stored, "a link's look"
    assert [u.id for u in second.learn_landed(session.id)] == [upload.id]


def test_landed_bytes_another_process_took_before_the_copy_are_left_to_it(two_stores):
    first, second = two_stores
    session = first.create_session("u")
    upload = slot(first, session.id)
    put_landed(first, upload)

    def learn_after_the_lease_ran_out() -> None:  # the first process stalled past its learn claim
        sql(first, "UPDATE uploads SET learn_lease = 1 WHERE id = ?", (upload.id,))
        second.learn_landed()

    first.blobs.before_copy = learn_after_the_lease_ran_out
    assert first.learn_landed() == []  # recording stays conditional: the second defence
    record = first.get_upload(upload.id)
    assert record.path == blob_key(session.id, upload.id, PROFILE_SHA)
    assert list(first.blobs.list_keys()) == [record.path]


@pytest.mark.parametrize("copied, recorded", [(PROFILE, True), (OTHER, False)])
def test_a_copy_the_store_does_not_vouch_for_is_read_back_before_it_is_recorded(two_stores, copied, recorded):
    store, _ = two_stores
    store.blobs.unvouched_copy = copied
    session = store.create_session("u")
    upload = slot(store, session.id)
    landed = put_landed(store, upload)
    learned = store.learn_landed()
    checked = blob_key(session.id, upload.id, PROFILE_SHA)
    if recorded:
        assert [u.path for u in learned] == [checked] and list(store.blobs.list_keys()) == [checked]
    else:
        assert learned == [] and store.get_upload(upload.id).stored_at is None
        assert list(store.blobs.list_keys()) == [landed], "the wrong copy is removed, the landed bytes stay"


def test_bytes_replaced_by_larger_ones_after_the_listing_are_refused_unread(pstore, tmp_path):
    store = presigning_store(tmp_path / "grow", CopyHookedFiles)
    try:
        store.max_upload_bytes = 20
        session = store.create_session("u")
        upload = slot(store, session.id)
        landed = put_landed(store, upload)  # 17 bytes: within the limit when listed
        store.blobs.grow[landed] = PROFILE * 3
        [refused] = store.learn_landed()
        assert (refused.path, refused.size, refused.sha256, refused.ingest_state) == (None, 51, "unread-51", "invalid")
        assert refused.ingest_error == "it is larger than this server's upload limit of 20 bytes"
        assert store.get_upload(upload.id) == refused and list(store.blobs.list_keys()) == []
        with pytest.raises(FileNotFoundError):
            store.read_profile_bytes(refused)
    finally:
        store.close()


def test_reconcile_keeps_the_checked_copy_of_an_open_slot_until_its_url_is_long_expired(pstore):
    session = pstore.create_session("u")
    open_slot, old_slot = slot(pstore, session.id, ts=1), slot(pstore, session.id, ts=2, ttl=-7200)
    copies = [blob_key(session.id, upload.id, PROFILE_SHA) for upload in (open_slot, old_slot)]
    for key in copies:  # what a process that was about to record them left (or still holds)
        pstore.blobs.put_bytes(key, PROFILE)
    report = pstore.reconcile()
    assert report.orphan_blobs == [copies[1]]
    assert list(pstore.blobs.list_keys()) == [copies[0]]


def test_bytes_gone_between_their_size_and_their_read_are_not_recorded(pstore):
    session = pstore.create_session("u")
    upload = slot(pstore, session.id)
    pstore.blobs.vanish.add(put_landed(pstore, upload))
    assert pstore.learn_landed() == []
    assert pstore.get_upload(upload.id).stored_at is None


@pytest.mark.parametrize(
    "blobs, count, listings",
    [(ListingPresigningFiles, 8, 0), (ListingPresigningFiles, 9, 1), (PresigningFiles, 9, 0)],
)
def test_many_open_slots_of_a_session_are_found_with_one_listing(tmp_path, blobs, count, listings):
    pstore = presigning_store(tmp_path / "data", blobs)
    try:
        session = pstore.create_session("u")
        done = stored(pstore, session.id, ts=-1)
        uploads = [slot(pstore, session.id, ts=ts) for ts in range(count)]
        for upload in uploads[1:]:
            put_landed(pstore, upload)
        learned = pstore.learn_landed(session.id)
        assert sorted(u.id for u in learned) == sorted(u.id for u in uploads[1:])
        assert pstore.blobs.listings == [f"profiles/{session.id}/"] * listings
        assert pstore.get_upload(uploads[0].id).stored_at is None and pstore.get_upload(done.id) == done
    finally:
        pstore.close()


# -- reconciliation at start -------------------------------------------------------------------------


def test_reconcile_removes_temp_files_orphans_and_resets_rows_without_bytes(store, caplog):
    session = store.create_session("u")
    kept = stored(store, session.id, b"abc", ts=1)
    lost = stored(store, session.id, b"xyz", ts=2)
    duplicate = stored(store, session.id, b"abc", ts=1)
    store.metadata.store_summary(lost.id, XYZ, b"summary")
    open_slot = slot(store, session.id, ts=3)
    profile_path(store, lost).unlink()
    orphans = [
        f"profiles/{session.id}/{UNKNOWN_LOG}.0123456789abcdef.bin",
        f"profiles/{session.id}/{kept.id}.0123456789abcdef.bin",  # an older version of a stored profile
        f"profiles/{session.id}/{open_slot.id}.bin",  # no presigned PUTs here: not learned
    ]
    for key in reversed(orphans):
        store.blobs.put_bytes(key, b"orphan")
    (store.data_dir / "tmp" / "body-x.part").write_bytes(b"partial")
    stray = store.data_dir / "profiles" / "junk" / "x.bin"
    stray.parent.mkdir()
    stray.write_bytes(b"not a key")
    store.metadata.claim_ingest(lease_ms=3_600_000, limit=5)
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server"):
        report = store.reconcile()
    assert report == ReconcileReport(
        temp_files=["tmp/body-x.part"],
        orphan_blobs=sorted(orphans),
        rows_without_bytes=[lost.id],
        released_claims=1,
    )
    assert [r.getMessage() for r in caplog.records] == [
        "reconciled the store at start: 1 temporary files and 3 profile files without a row removed, "
        "1 rows without bytes reset"
    ]
    assert list(store.blobs.list_keys()) == [kept.path] and stray.read_bytes() == b"not a key"
    # the claim of the "crashed" server ends as a dead claim: nothing is counted until it is claimed again
    assert store.get_upload(kept.id) == kept
    assert store.get_upload(duplicate.id) == duplicate
    reset = store.get_upload(lost.id)
    assert (reset.stored_at, reset.path, reset.sha256, reset.ingest_state) == (None, None, None, None)
    assert store.metadata.get_summary(lost.id, XYZ) is None
    assert store.metadata.claim_upload_ingest(kept.id, lease_ms=60_000) is True, "the claim was released"
    # it was alone in the dead claim: that claim is its failed try
    assert store.get_upload(kept.id) == dataclasses.replace(kept, ingest_tries=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.server"):
        assert store.reconcile() == ReconcileReport(released_claims=1)
    assert caplog.records == []
    assert store.reconcile() == ReconcileReport()


def test_reconcile_leaves_landed_puts_to_the_landed_look_and_removes_leftovers_of_recorded_ones(pstore):
    session, claimed = pstore.create_session("u"), pstore.create_session("v")
    landed, done = slot(pstore, session.id, ts=1), stored(pstore, session.id, b"abc", ts=2)
    expired = slot(pstore, session.id, ts=3, ttl=-7200)  # the slot sweep records it late
    late = slot(pstore, claimed.id)
    keys = [put_landed(pstore, upload) for upload in (landed, done, late, expired)]
    stale = f"profiles/{session.id}/{landed.id}.0123456789abcdef.bin"  # a checked copy of an open slot
    no_slot = f"profiles/{session.id}/log-{'Z' * 24}.bin"  # no slot has this id
    for key in (stale, no_slot):
        pstore.blobs.put_bytes(key, b"older")
    pstore.claim(claimed.id, "org-a")
    report = pstore.reconcile()
    assert report.orphan_blobs == sorted([keys[1], no_slot]), "only a recorded upload's landed bytes, and no slot's"
    assert pstore.get_upload(landed.id).stored_at is None, "recorded by the landed look, not by a start"
    assert sorted(pstore.blobs.list_keys()) == sorted([done.path, keys[0], keys[2], keys[3], stale])
    [learned] = pstore.learn_landed()
    checked = blob_key(session.id, landed.id, PROFILE_SHA)
    assert (learned.id, learned.path, learned.sha256) == (landed.id, checked, PROFILE_SHA)
    assert pstore.reconcile().orphan_blobs == [stale], "an older copy of a recorded upload is a leftover"


def test_a_start_reconciles_without_scanning_when_asked_and_a_due_scan_runs_once_per_interval(pstore):
    session = pstore.create_session("u")
    orphan = f"profiles/{session.id}/{UNKNOWN_LOG}.bin"
    pstore.blobs.put_bytes(orphan, b"no slot")
    assert pstore.reconcile(scan=False) == ReconcileReport() and pstore.blobs.exists(orphan)
    assert pstore.scan_orphans_if_due(interval_seconds=3600) == ReconcileReport(orphan_blobs=[orphan])
    pstore.blobs.put_bytes(orphan, b"again")
    assert pstore.scan_orphans_if_due(interval_seconds=3600) is None, "scanned a moment ago: not due"
    assert pstore.scan_orphans_if_due(interval_seconds=0) == ReconcileReport(orphan_blobs=[orphan])


# -- the SQL store: schema, ingest, summaries, derived artefacts ------------------------------------


def test_dialects_replace_placeholders_and_type_tokens():
    statement = "INSERT INTO t (a, b) VALUES (?, ?) -- {BIGINT} {BLOB}"
    assert SQLITE.sql(statement) == "INSERT INTO t (a, b) VALUES (?, ?) -- INTEGER BLOB"
    assert POSTGRESQL.sql(statement) == "INSERT INTO t (a, b) VALUES (%s, %s) -- BIGINT BYTEA"
    assert Dialect(name="plain").sql(statement) == "INSERT INTO t (a, b) VALUES (?, ?) -- INTEGER BLOB"


def test_the_schema_is_made_once_and_its_version_recorded(tmp_path):
    store = Store(tmp_path / "d")
    session = store.create_session("u")
    upload = stored(store, session.id)
    store.metadata.store_summary(upload.id, ABC, b"s")
    store.close()
    reopened = Store(tmp_path / "d")
    try:
        assert sql(reopened, "SELECT name, value FROM meta") == [("schema_version", str(SCHEMA_VERSION))]
        assert reopened.get_upload(upload.id).ingest_state == "ready", "reopening does not summarise again"
        assert reopened.get_session(session.id) == session
    finally:
        reopened.close()


def test_an_older_database_gets_the_new_columns_and_its_profiles_summarised(tmp_path, caplog):
    data_dir = tmp_path / "old"
    data_dir.mkdir()
    sid, kept, empty = "session-" + "A" * 24, "log-" + "B" * 24, "log-" + "C" * 24
    with contextlib.closing(sqlite3.connect(data_dir / "songbird.sqlite3")) as conn, conn:
        conn.executescript(FIRST_SCHEMA)
        conn.execute("INSERT INTO sessions VALUES (?, 'u', 'guest', 1, NULL, NULL)", (sid,))
        conn.execute(
            "INSERT INTO uploads VALUES (?, ?, 'batch', 5, NULL, '[]', 1, 2, 3, 3, ?, ?)",
            (kept, sid, ABC, f"profiles/{sid}/{kept}.bin"),
        )
        conn.execute(
            "INSERT INTO uploads VALUES (?, ?, 'batch', 5, NULL, '[]', 1, 2, NULL, NULL, NULL, NULL)", (empty, sid)
        )
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        store = Store(data_dir)
    try:
        assert [r.getMessage() for r in caplog.records] == [
            "storage: added column uploads.ingest_state",
            "storage: added column uploads.ingest_error",
            "storage: added column uploads.ingest_lease",
            "storage: added column uploads.duplicate_of",
            "storage: added column uploads.ingest_owner",
            "storage: added column sessions.dataset_id",
            "storage: added column sessions.deleted_at",
            "storage: added column sessions.purge_lease",
            "storage: added column uploads.deleted_at",
            "storage: added column uploads.purge_lease",
            "storage: added column uploads.ingest_tries",
            "storage: added column uploads.format",
            "storage: added column uploads.ingest_batch",
            "storage: added column uploads.learn_lease",
            "storage: added column uploads.learn_owner",
        ]
        assert store.get_upload(kept).ingest_state == "pending"
        assert store.get_upload(kept).format is None, "an older slot takes one profile"
        assert store.get_upload(empty).ingest_state is None
        assert store.metadata.pending_ingest() == 1
    finally:
        store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="whylogs_songbird.server.storage"):
        Store(data_dir).close()
    assert caplog.records == []


def test_pending_profiles_are_claimed_in_stored_order_under_a_lease(store):
    session = store.create_session("u")
    a, b, c = (stored(store, session.id, bytes([i]), ts=i) for i in range(3))
    stored(store, session.id, bytes([0]), ts=0)  # a duplicate: nothing to summarise
    slot(store, session.id, ts=9)  # no bytes: nothing to summarise
    for upload, at in ((a, 3), (b, 1), (c, 2)):
        sql(store, "UPDATE uploads SET stored_at = ? WHERE id = ?", (at, upload.id))
    metadata = store.metadata
    assert metadata.pending_ingest() == 3
    assert [u.id for u in metadata.claim_ingest(lease_ms=60_000)] == [b.id]
    claimed = metadata.claim_ingest(lease_ms=60_000, limit=5)
    assert [u.id for u in claimed] == [c.id, a.id]
    assert claimed[1] == store.get_upload(a.id)
    assert metadata.claim_ingest(lease_ms=60_000, limit=5) == [], "every profile is held"
    assert metadata.release_ingest_claims() == 3 and metadata.release_ingest_claims() == 0
    # each dead claim's profile comes alone; only b, alone in its dead claim, is charged for it
    assert [u.id for u in metadata.claim_ingest(lease_ms=-1, limit=5)] == [b.id]
    assert [u.id for u in metadata.claim_ingest(lease_ms=60_000, limit=5)] == [b.id], "its claim (alone) died again"
    assert [u.id for u in metadata.claim_ingest(lease_ms=60_000, limit=5)] == [c.id], "ended leases are taken"
    assert [u.id for u in metadata.claim_ingest(lease_ms=60_000, limit=5)] == [a.id]
    assert [store.get_upload(u.id).ingest_tries for u in (a, b, c)] == [0, 2, 0]
    assert metadata.pending_ingest() == 3, "claiming is not summarising"


def test_a_heartbeat_renews_only_this_hosts_claims_still_held_on_pending_profiles(store):
    session = store.create_session("u")
    mine, theirs, ended, done = (stored(store, session.id, bytes([i]), ts=i) for i in range(4))
    metadata = store.metadata
    metadata.owner = "host-a"
    for upload in (mine, ended, done):
        assert metadata.claim_upload_ingest(upload.id, lease_ms=1_000)
    metadata.owner = "host-b"
    assert metadata.claim_upload_ingest(theirs.id, lease_ms=1_000)
    metadata.owner = "host-a"
    metadata.release_ingest_claim(ended.id, ended.sha256)
    metadata.store_summary(done.id, done.sha256, b"digest")
    before = now_ms()
    ids = [u.id for u in (mine, theirs, ended, done)]
    assert metadata.renew_ingest_claims(ids, lease_ms=600_000) == {mine.id}
    assert store.get_upload(mine.id).ingest_lease >= before + 600_000
    assert store.get_upload(theirs.id).ingest_lease < before + 600_000, "another host's claim is left alone"
    assert store.get_upload(ended.id).ingest_lease is None and store.get_upload(done.id).ingest_lease is None
    assert metadata.renew_ingest_claims([], lease_ms=600_000) == set()


def test_one_profile_is_claimed_while_pending_and_unheld(store):
    session = store.create_session("u")
    upload = stored(store, session.id)
    metadata = store.metadata
    assert metadata.claim_upload_ingest(upload.id, lease_ms=60_000) is True
    assert metadata.claim_upload_ingest(upload.id, lease_ms=60_000) is False
    assert metadata.claim_ingest(lease_ms=60_000) == []
    assert metadata.release_ingest_claims() == 1
    assert metadata.claim_upload_ingest(upload.id, lease_ms=-1) is True
    assert metadata.claim_upload_ingest(upload.id, lease_ms=60_000) is True, "an ended lease is taken"
    assert metadata.claim_upload_ingest(UNKNOWN_LOG, lease_ms=60_000) is False
    assert metadata.claim_upload_ingest(slot(store, session.id).id, lease_ms=60_000) is False
    metadata.store_summary(upload.id, ABC, b"s")
    assert metadata.claim_upload_ingest(upload.id, lease_ms=60_000) is False, "summarised: not pending"
    assert metadata.release_ingest_claims() == 0


def test_a_summary_is_kept_for_its_version_of_the_bytes(store):
    session = store.create_session("u")
    upload = stored(store, session.id)
    duplicate = stored(store, session.id)
    metadata = store.metadata
    assert metadata.store_summary(upload.id, XYZ, b"stale") is False, "the bytes changed meanwhile"
    assert metadata.get_summary(upload.id, XYZ) is None and store.get_upload(upload.id).ingest_state == "pending"
    assert metadata.store_summary(upload.id, ABC, b"summary") is True
    assert metadata.get_summary(upload.id, ABC) == b"summary" and metadata.get_summary(upload.id, XYZ) is None
    record = store.get_upload(upload.id)
    assert (record.ingest_state, record.ingest_error) == ("ready", None)
    assert metadata.pending_ingest() == 0
    assert metadata.store_summary(upload.id, ABC, b"newer") is True
    assert metadata.get_summary(upload.id, ABC) == b"newer"
    assert metadata.store_summary(duplicate.id, ABC, b"x") is False, "a duplicate has no summary of its own"
    assert metadata.get_summary(duplicate.id, ABC) is None


def test_summaries_stored_together_are_each_kept_only_for_their_version_of_the_bytes(store):
    session = store.create_session("u")
    first, second = stored(store, session.id, b"abc"), stored(store, session.id, b"xyz")
    kept = store.store_summaries([(first.id, ABC, b"one"), (second.id, ABC, b"stale"), (second.id, XYZ, b"two")])
    assert kept == [True, False, True]
    assert [store.get_summary(u.id, u.sha256) for u in (first, second)] == [b"one", b"two"]
    assert store.metadata.pending_ingest() == 0


def test_an_invalid_profile_keeps_its_reason_cut_to_500_characters(store):
    session = store.create_session("u")
    upload = stored(store, session.id)
    metadata = store.metadata
    assert metadata.mark_invalid(upload.id, XYZ, "other bytes") is False
    assert store.get_upload(upload.id).ingest_state == "pending"
    metadata.claim_upload_ingest(upload.id, lease_ms=60_000)
    assert metadata.mark_invalid(upload.id, ABC, "r" * 499 + "st" + "x" * 99) is True
    record = store.get_upload(upload.id)
    assert (record.ingest_state, record.ingest_error, record.invalid) == ("invalid", "r" * 499 + "s", True)
    assert metadata.release_ingest_claims() == 0, "marking ends the claim"
    assert metadata.claim_ingest(lease_ms=60_000) == [] and metadata.pending_ingest() == 0
    assert metadata.mark_invalid(UNKNOWN_LOG, ABC, "x") is False


def test_derived_artefacts_are_replaced_and_dropped_by_literal_prefix(store):
    session, other = store.create_session("u"), store.create_session("v")
    metadata = store.metadata
    keys = ["t_1:a", "tx1:a", "t%:b", "t%x", "t\\y", "t\\\\z", "u"]
    for i, key in enumerate(keys):
        metadata.put_derived(session.id, key, bytes([i]))
    metadata.put_derived(other.id, "t_1:a", b"theirs")
    metadata.put_derived(session.id, "u", b"replaced")
    assert metadata.get_derived(session.id, "u") == b"replaced" and metadata.get_derived(session.id, "t%x") == b"\x03"
    assert metadata.get_derived(session.id, "missing") is None and metadata.get_derived(other.id, "u") is None
    assert metadata.drop_derived(session.id, "t_") == 1
    assert metadata.get_derived(session.id, "tx1:a") == b"\x01" and metadata.get_derived(session.id, "t_1:a") is None
    assert metadata.drop_derived(session.id, "t%") == 2
    assert metadata.drop_derived(session.id, "t\\") == 2
    assert metadata.drop_derived(session.id, "nothing") == 0
    assert metadata.drop_derived(session.id) == 2
    assert metadata.get_derived(other.id, "t_1:a") == b"theirs"
    for bad in ("session-../x", "log-" + "A" * 24):
        with pytest.raises(ValueError, match="not a server-made id"):
            metadata.put_derived(bad, "k", b"")


# -- several hosts on one store: what a start leaves alone, the landed hook, idle looks --------------


def test_a_shared_store_start_leaves_fresh_copies_and_claims_alone_and_removes_true_leftovers(pstore):
    session = pstore.create_session("u")
    kept = stored(pstore, session.id, b"abc", ts=1)
    expired = slot(pstore, session.id, ts=2, ttl=-7200)  # e.g. being recorded late by another host's slot sweep
    fresh = [
        blob_key(session.id, expired.id, PROFILE_SHA),
        # of a recorded upload: a leftover, but maybe the landed bytes its recorder is about to remove
        f"profiles/{session.id}/{kept.id}.bin",
    ]
    leftover = f"profiles/{session.id}/{UNKNOWN_LOG}.0123456789abcdef.bin"  # no row can ever name it
    for key in [*fresh, leftover]:
        pstore.blobs.put_bytes(key, b"leftover")
    pstore.metadata.claim_ingest(lease_ms=3_600_000, limit=5)
    pstore.metadata.shared = True  # as PostgreSQL is: other hosts run while this one starts
    report = pstore.reconcile()
    assert report.orphan_blobs == [leftover] and report.released_claims == 0
    assert sorted(pstore.blobs.list_keys()) == sorted([kept.path, *fresh])
    assert pstore.metadata.claim_upload_ingest(kept.id, lease_ms=60_000) is False, "the live claim holds"
    # the same copies once older than the grace period are leftovers
    assert pstore.reconcile(grace_seconds=-1).orphan_blobs == sorted(fresh)
    assert list(pstore.blobs.list_keys()) == [kept.path]


def test_a_row_is_reset_only_while_it_still_names_the_missing_key(store):
    session = store.create_session("u")
    first = stored(store, session.id, b"abc", ts=1)
    assert store.metadata.unmark_stored([first.id], keys=["profiles/elsewhere.bin"]) == 0
    assert store.get_upload(first.id) == first
    assert store.metadata.unmark_stored([first.id], keys=[first.path]) == 1
    assert store.get_upload(first.id).stored_at is None


def test_the_landed_hook_runs_once_per_recorded_upload_however_it_landed(tmp_path):
    seen: list[str] = []
    for store in (Store(tmp_path / "embedded"), presigning_store(tmp_path / "presigned")):
        try:
            store.add_landed_hook(lambda upload: seen.append(upload.id))
            session = store.create_session("u")
            if store.presigns:
                upload = slot(store, session.id, ts=1)
                put_landed(store, upload)
                assert [u.id for u in store.learn_landed(session.id)] == [upload.id]
                assert store.learn_landed(session.id) == []  # recorded already: learned (and hooked) once
            else:
                upload = stored(store, session.id, b"abc", ts=1)
                store.store_profile_data(upload.id, b"abc", sha256=ABC)  # a retried PUT records nothing new
                stored(store, session.id, b"abc", ts=1)  # a duplicate records no new profile
            assert seen == [upload.id]
            seen.clear()
        finally:
            store.close()


def test_idle_open_slots_are_looked_for_less_and_less_often_and_at_once_when_asked(tmp_path):
    pstore = presigning_store(tmp_path / "data", ListingPresigningFiles)
    try:
        session = pstore.create_session("u")
        uploads = [slot(pstore, session.id, ts=ts) for ts in range(9)]  # more than 8: one listing a look
        for _ in range(5):
            assert pstore.learn_landed() == []  # the ingest worker's background look, back to back
        assert len(pstore.blobs.listings) == 1, "nothing landed: the next look waits"
        assert pstore.learn_landed(session.id) == [] and len(pstore.blobs.listings) == 2  # a link or page looks
        put_landed(pstore, uploads[0])
        slot(pstore, session.id, ts=99)  # new slots: the background look comes back at once
        assert [u.id for u in pstore.learn_landed()] == [uploads[0].id] and len(pstore.blobs.listings) == 3
    finally:
        pstore.close()


def test_a_page_s_nudge_brings_the_next_look_forward_but_never_looks_itself(tmp_path, monkeypatch):
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(store_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    pstore = presigning_store(tmp_path / "data", ListingPresigningFiles)
    woken: list[str] = []

    def waker() -> None:
        woken.append("worker")

    pstore.add_look_waker(waker)
    try:
        session = pstore.create_session("u")
        uploads = [slot(pstore, session.id, ts=ts) for ts in range(10)]  # more than 8 (then 9): one listing a look
        for _ in range(4):  # nothing lands: waits of 1, 2, 4 s
            pstore.learn_landed()
            clock.now += {1: 1.0, 2: 2.0, 3: 4.0}.get(len(pstore.blobs.listings), 0.0)
        assert len(pstore.blobs.listings) == 4  # the next look is due 8 s after the last
        clock.now += 0.5
        put_landed(pstore, uploads[0])
        pstore.nudge_landed(session.id)  # a page views the session
        assert woken == ["worker"] and len(pstore.blobs.listings) == 4, "the page itself looks at nothing"
        assert pstore.learn_landed() == [] and len(pstore.blobs.listings) == 4, "not sooner than 1 s after the last"
        clock.now += 0.5
        assert [u.id for u in pstore.learn_landed()] == [uploads[0].id] and len(pstore.blobs.listings) == 5
        pstore.learn_landed()  # bytes were found: looked at again at once
        clock.now += 1.0
        pstore.learn_landed()  # ... then from 1 s afresh
        assert len(pstore.blobs.listings) == 7
        pstore.nudge_landed(session.id)  # asked again within the second after a look: no look yet
        assert pstore.learn_landed() == [] and len(pstore.blobs.listings) == 7
        pstore.remove_look_waker(waker)
        pstore.remove_look_waker(waker)  # twice is harmless
        pstore.nudge_landed(session.id)
        assert woken == ["worker", "worker"], "a removed waker is not called"
    finally:
        pstore.close()


def test_what_a_request_s_look_records_wakes_the_ingest_worker_and_the_background_s_does_not(tmp_path):
    pstore = presigning_store(tmp_path / "data")
    woken: list[str] = []
    waker = lambda: woken.append("worker")  # noqa: E731
    pstore.add_recorded_waker(waker)
    try:
        session = pstore.create_session("u")
        first, second, third = (slot(pstore, session.id, ts=ts) for ts in (100, 200, 300))
        assert pstore.learn_landed(session.id) == [] and woken == []  # nothing landed, nothing recorded
        put_landed(pstore, first)
        assert [u.id for u in pstore.learn_landed(session.id)] == [first.id] and woken == ["worker"]
        put_landed(pstore, second)
        assert pstore.awaits_upload(session.id, second.id) is True and woken == ["worker"] * 2
        put_landed(pstore, third)
        # the background look's caller is the worker itself
        assert [u.id for u in pstore.learn_landed()] == [third.id] and woken == ["worker"] * 2
        pstore.remove_recorded_waker(waker)
        pstore.remove_recorded_waker(waker)  # twice is harmless
        assert pstore._recorded_wakers == []
    finally:
        pstore.close()


def test_a_store_without_presigned_urls_needs_no_nudge_and_awaits_no_upload(store):
    woken: list[str] = []
    store.add_look_waker(lambda: woken.append("worker"))
    session = store.create_session("u")
    upload = slot(store, session.id, ts=100)
    store.nudge_landed(session.id)
    assert woken == [] and store.awaits_upload(session.id, upload.id) is False


def test_an_awaited_upload_is_an_open_slot_named_by_id_or_batch_timestamp(tmp_path):
    pstore = presigning_store(tmp_path / "data")
    try:
        session, other = pstore.create_session("u"), pstore.create_session("u")
        batch = slot(pstore, session.id, ts=100)
        reference = slot(pstore, session.id, kind="reference", ts=None)
        expired = slot(pstore, session.id, ts=300, ttl=-LANDED_GRACE_SECONDS - 5)
        assert pstore.awaits_upload(session.id, batch.id) and pstore.awaits_upload(session.id, "100")
        assert pstore.awaits_upload(session.id, reference.id)
        assert not pstore.awaits_upload(session.id, "101") and not pstore.awaits_upload(other.id, batch.id)
        assert not pstore.awaits_upload(session.id, expired.id) and not pstore.awaits_upload(session.id, "300")
        put_landed(pstore, batch)
        assert pstore.learn_landed(session.id) != [] and not pstore.awaits_upload(session.id, batch.id)
    finally:
        pstore.close()


def test_a_named_awaited_upload_that_landed_is_recorded_by_one_look_at_its_key(tmp_path):
    pstore = presigning_store(tmp_path / "data")
    try:
        session = pstore.create_session("u")
        landed, waiting = slot(pstore, session.id, ts=100), slot(pstore, session.id, ts=200)
        put_landed(pstore, landed)
        put_landed(pstore, waiting)
        assert pstore.awaits_upload(session.id, "100"), "named and open when asked: resolve again"
        assert pstore.get_upload(landed.id).stored and [u.id for u in pstore.resolve_profile(session.id, "100")] == [
            landed.id
        ]
        assert not pstore.get_upload(waiting.id).stored, "a slot the link does not name is left to the worker"
        assert not pstore.awaits_upload(session.id, "100")
    finally:
        pstore.close()


def test_a_restarting_host_of_a_shared_store_releases_its_own_dead_claims_only(tmp_path):
    hosts = [Store(tmp_path / "data"), Store(tmp_path / "data")]
    try:
        for name, host in zip("ab", hosts):
            host.metadata.shared, host.metadata.owner = True, f"host-{name}"
        session = hosts[0].create_session("u")
        mine, theirs = stored(hosts[0], session.id, b"abc", ts=1), stored(hosts[0], session.id, b"xyz", ts=2)
        assert hosts[0].metadata.claim_upload_ingest(mine.id, lease_ms=3_600_000)
        assert hosts[1].metadata.claim_upload_ingest(theirs.id, lease_ms=3_600_000)
        # and each was learning a landed upload
        learning, learnt = slot(hosts[0], session.id, ts=3), slot(hosts[0], session.id, ts=4)
        assert hosts[0].metadata.claim_landed([learning.id], lease_ms=3_600_000) == {learning.id}
        assert hosts[1].metadata.claim_landed([learnt.id], lease_ms=3_600_000) == {learnt.id}
        report = hosts[0].reconcile()  # host a starts again: its claims were dead work
        assert (report.released_claims, report.released_learn_claims) == (1, 1)
        assert hosts[1].metadata.claim_upload_ingest(mine.id, lease_ms=60_000), "released"
        assert not hosts[0].metadata.claim_upload_ingest(theirs.id, lease_ms=60_000), "host b's claim holds"
        assert hosts[0].metadata.claim_landed([learning.id, learnt.id], lease_ms=60_000) == {learning.id}
        assert hosts[1].reconcile().released_learn_claims == 1, "host b's own"
        hosts[0].metadata.shared = hosts[1].metadata.shared = False  # one host's store: a start ends every claim
        assert hosts[0].reconcile().released_learn_claims == 1
        assert hosts[1].metadata.claim_landed([learning.id], lease_ms=60_000) == {learning.id}
    finally:
        for host in hosts:
            host.close()


# -- datasets of organizations: container rows no guest route finds ------------------------------


def test_a_dataset_container_is_made_once_per_org_and_dataset(store):
    assert store.find_dataset("org-a", "model-1") is None
    first = store.dataset_container("org-a", "model-1")
    assert (first.org_id, first.dataset_id, first.is_dataset) == ("org-a", "model-1", True)
    assert store.dataset_container("org-a", "model-1") == first == store.find_dataset("org-a", "model-1")
    other_org = store.dataset_container("org-b", "model-1")
    other_dataset = store.dataset_container("org-a", "model-2")
    assert len({first.id, other_org.id, other_dataset.id}) == 3


def test_a_dataset_container_is_no_session_to_guests_nor_to_keyed_session_operations(store):
    guest = store.create_session("u")
    container = store.dataset_container("org-a", "model-1")
    assert store.guest_session(container.id) is None
    assert store.get_session(container.id) is None
    assert store.claim(container.id, "org-a") is None
    assert store.find_dataset("org-a", "model-1").claimed_at is None, "a refused claim changed nothing"
    assert [s.id for s in store.recent_sessions()] == [guest.id]
    assert store.session_count() == 1
    assert store.guest_session(guest.id) == guest


def test_dataset_containers_made_at_once_by_many_threads_are_one(store):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: store.dataset_container("org-a", "model-9").id, range(16)))
    assert len(ids) == 1
