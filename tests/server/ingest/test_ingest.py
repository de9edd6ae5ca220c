"""Uploads off the slow path (issue 10): the cheap structural check of PUT bodies, crafted
profiles, the background ingest worker and stored digests, duplicate uploads, reconciliation
after kill -9, file modes, and the storage factory. Real HTTP against real servers."""

import concurrent.futures
import hashlib
import os
import signal
import stat
import threading
import time

import pytest
import requests
import whylogs as why
from conftest import FIRST_SCHEMA, make_profile_bytes
from profile_crafting import corrupt_chunk_messages, repeated_chunk, shared_chunk, unknown_metric_index
from server_processes import TS, new_slot, start_server_process, stop, wait_for
from stored_profiles import profile_path, store_profile_bytes

from whylogs_songbird.server import LocalServer, Store
from whylogs_songbird.server.storage import StorageConfigError, StorageSpec, open_storage
from whylogs_songbird.server.storage.base import BlobStore, MetadataStore
from whylogs_songbird.server.storage.files import FileBlobStore
from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import blob_key, now_ms

TIMEOUT = 30


def new_session(server):
    return requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]


# -- the cheap check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("craft", "reason"),
    [
        (lambda data: shared_chunk(data, 10_000), "named more than once"),
        (lambda data: repeated_chunk(data, 500_000), "more than 20000 chunks"),
        (lambda data: data + b"junk" * 10, "40 bytes follow the end"),
        (lambda data: data[:-5], "header says"),
        (lambda data: b"WHY2" + data[4:], "magic"),
        (corrupt_chunk_messages, "not a valid chunk message"),
    ],
    ids=["shared-chunk", "repeated-chunk", "trailing-junk", "truncated", "bad-magic", "broken-metrics"],
)
def test_crafted_profiles_are_refused_while_the_server_keeps_answering(server, craft, reason):
    session_id = new_session(server)
    slot = new_slot(server.url, session_id)
    body = craft(make_profile_bytes())
    answers = []

    def put():
        answers.append(requests.put(slot["uploadUrl"], data=body, timeout=TIMEOUT))

    thread = threading.Thread(target=put)
    thread.start()
    while thread.is_alive():  # other requests are answered meanwhile
        assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
    thread.join()
    [answer] = answers
    assert answer.status_code == 400 and reason in answer.json()["message"], answer.text
    assert "nothing was stored" in answer.json()["message"]
    assert server.store.list_profiles(session_id) == []
    assert list((server.data_dir / "tmp").iterdir()) == [], "no temporary file left behind"


def test_the_column_cap_is_configurable(server_factory):
    server = server_factory(max_columns=2)
    slot = new_slot(server.url, new_session(server))
    answer = requests.put(slot["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT)
    assert answer.status_code == 400 and "3 columns, more than this server's limit of 2" in answer.json()["message"]


def test_segmented_profiles_from_whylogs_pass_the_cheap_check(server):
    import pandas as pd
    from whylogs.core.schema import DatasetSchema
    from whylogs.core.segmentation_partition import segment_on_column

    from whylogs_songbird.profiles import serialize_view

    df = pd.DataFrame({"city": ["a", "b", "a"], "x": [1, 2, 3]})
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    session_id = new_session(server)
    for partition in results.segments():
        segment = results.view(partition)
        slot = new_slot(server.url, session_id)
        answer = requests.put(slot["uploadUrl"], data=serialize_view(segment), timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text


# -- the ingest worker and stored digests ------------------------------------------------------


def test_the_ingest_worker_stores_digests_and_pages_never_read_the_bytes_again(server):
    session_id = new_session(server)
    slot = new_slot(server.url, session_id)
    assert requests.put(slot["uploadUrl"], data=make_profile_bytes(n_rows=7), timeout=TIMEOUT).status_code == 200
    wait_for(lambda: server.store.get_upload(slot["id"]).ingest_state == "ready", "summarised in the background")
    upload = server.store.get_upload(slot["id"])
    assert server.store.metadata.get_summary(upload.id, upload.sha256)
    profile_path(server.store, upload).unlink()  # the page has everything it needs in the store
    page = requests.get(slot["observatoryUrl"], timeout=TIMEOUT)
    assert page.status_code == 200 and 'data-field="rows" data-value="7"' in page.text


def test_a_profile_broken_inside_is_marked_invalid_and_its_page_says_so(server):
    session_id = new_session(server)
    slot = new_slot(server.url, session_id)
    broken = unknown_metric_index(make_profile_bytes())  # well-formed, but whylogs refuses it
    assert requests.put(slot["uploadUrl"], data=broken, timeout=TIMEOUT).status_code == 200
    wait_for(lambda: server.store.get_upload(slot["id"]).ingest_state == "invalid", "marked invalid")
    assert "not a readable whylogs profile" in server.store.get_upload(slot["id"]).ingest_error
    page = requests.get(slot["observatoryUrl"], timeout=TIMEOUT)
    assert page.status_code == 422 and "not a readable whylogs profile" in page.text
    listing = requests.get(f"{server.url}/sessions/{session_id}", timeout=TIMEOUT)
    assert listing.status_code == 200 and 'data-field="invalid"' in listing.text


def test_work_left_pending_is_picked_up_by_the_next_server(tmp_path):
    data_dir = tmp_path / "data"
    store = Store(data_dir)
    try:
        session = store.create_session("u")
        upload = store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS)
        store_profile_bytes(store, upload.id, make_profile_bytes())
        store.metadata.claim_ingest(lease_ms=3_600_000)  # claimed by a "server" that then died
        assert store.get_upload(upload.id).ingest_state == "pending"
    finally:
        store.close()
    with LocalServer(data_dir=data_dir) as server:
        wait_for(lambda: server.store.get_upload(upload.id).ingest_state == "ready", "summarised after restart")


# -- duplicates --------------------------------------------------------------------------------


def test_identical_bytes_for_the_same_timestamp_and_segment_are_kept_once(server):
    session_id = new_session(server)
    data = make_profile_bytes(n_rows=5)
    first, second = new_slot(server.url, session_id), new_slot(server.url, session_id)
    r1 = requests.put(first["uploadUrl"], data=data, timeout=TIMEOUT)
    r2 = requests.put(second["uploadUrl"], data=data, timeout=TIMEOUT)
    assert r1.status_code == 200 and "X-Songbird-Duplicate-Of" not in r1.headers
    assert r2.status_code == 200 and r2.headers["X-Songbird-Duplicate-Of"] == first["id"]
    assert [p.id for p in server.store.list_profiles(session_id)] == [first["id"]]
    page = requests.get(first["observatoryUrl"], timeout=TIMEOUT)
    assert 'data-field="rows" data-value="5"' in page.text, "counted once"
    assert "1 duplicate upload was ignored" in page.text
    # the duplicate's own link shows the original
    by_id = requests.get(f"{server.url}/resources/model-1/profiles?profile={second['id']}&sessionToken={session_id}")
    assert by_id.status_code == 200 and 'data-value="5"' in by_id.text

    # other segments, timestamps and bytes are not duplicates; different bytes still merge
    other_segment = new_slot(server.url, session_id, tags=[("k", "v")])
    other_ts = new_slot(server.url, session_id, ts=TS + 1)
    other_bytes = new_slot(server.url, session_id)
    for slot, body in ((other_segment, data), (other_ts, data), (other_bytes, make_profile_bytes(n_rows=3, seed=9))):
        answer = requests.put(slot["uploadUrl"], data=body, timeout=TIMEOUT)
        assert answer.status_code == 200 and "X-Songbird-Duplicate-Of" not in answer.headers
    merged = requests.get(first["observatoryUrl"].split("&segment")[0], timeout=TIMEOUT)
    assert 'data-field="rows" data-value="13"' in merged.text, "5 + 5 (segment k=v) + 3 merged"


def test_a_repeated_put_to_the_same_slot_replaces_it_and_is_no_duplicate(server):
    session_id = new_session(server)
    slot = new_slot(server.url, session_id)
    data = make_profile_bytes()
    for _ in range(2):
        answer = requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT)
        assert answer.status_code == 200 and "X-Songbird-Duplicate-Of" not in answer.headers
    assert len(server.store.list_profiles(session_id)) == 1
    files = list((server.data_dir / "profiles" / session_id).iterdir())
    assert len(files) == 1


# -- files, modes, reconciliation ------------------------------------------------------------


def test_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = Store(tmp_path / "data")
        try:
            session = store.create_session("u")
            upload = store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS)
            stored = store_profile_bytes(store, upload.id, make_profile_bytes())
            path = profile_path(store, stored)
        finally:
            store.close()
    finally:
        os.umask(old)
    data_dir = tmp_path / "data"
    for directory in (data_dir, data_dir / "profiles", data_dir / "tmp", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in (path, data_dir / "songbird.sqlite3"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_kill_9_during_uploads_then_restart_leaves_no_profile_without_bytes(tmp_path):
    data_dir = tmp_path / "data"
    process, url = start_server_process(data_dir)
    bodies = [make_profile_bytes(n_rows=20 + i, seed=i) for i in range(4)]
    stop_event = threading.Event()
    try:
        session_id = requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]

        answered = []  # list.append is atomic: one entry per answered PUT

        def upload(i):
            done = 0
            while not stop_event.is_set():
                try:
                    slot = new_slot(url, session_id, ts=TS + i * 1000 + done)
                    requests.put(slot["uploadUrl"], data=bodies[(i + done) % 4], timeout=TIMEOUT)
                    done += 1
                    answered.append(i)
                except requests.RequestException:
                    return done
            return done

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(upload, i) for i in range(4)]
            # answered PUTs, not files: a file is renamed into place before its PUT is answered
            wait_for(lambda: len(answered) >= 8, "uploads under way")
            os.killpg(process.pid, signal.SIGKILL)  # mid-upload
            process.wait(10)
            stop_event.set()
            for future in futures:
                future.result()
    finally:
        stop_event.set()
        stop(process)

    process, url = start_server_process(data_dir)
    try:
        store = Store(data_dir)
        try:
            stored = store.list_profiles(session_id)
            assert stored, "uploads that were answered are still there"
            for upload in stored:  # every profile row has its bytes, intact
                assert hashlib.sha256(store.read_profile_bytes(upload)).hexdigest() == upload.sha256
            on_disk = {p.relative_to(data_dir).as_posix() for p in (data_dir / "profiles").rglob("*.bin")}
            assert on_disk == {u.path for u in stored}, "no bytes without a row"
            assert list((data_dir / "tmp").iterdir()) == []
            wait_for(lambda: store.metadata.pending_ingest() == 0, "the restarted server summarises what was left")
            assert all(store.get_upload(u.id).ingest_state == "ready" for u in stored)
        finally:
            store.close()
        assert requests.get(f"{url}/sessions/{session_id}", timeout=TIMEOUT).status_code == 200
    finally:
        stop(process)


def test_reconcile_fixes_rows_without_bytes_and_bytes_without_rows(tmp_path):
    store = Store(tmp_path / "data")
    try:
        session = store.create_session("u")
        a, b = (store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS + i) for i in range(2))
        kept = store_profile_bytes(store, a.id, make_profile_bytes())
        lost = store_profile_bytes(store, b.id, make_profile_bytes(seed=3))
        profile_path(store, lost).unlink()  # a row without bytes
        orphan = profile_path(store, kept).parent / f"{b.id}.0123456789abcdef.bin"
        orphan.write_bytes(b"x")  # bytes without a row
        (tmp_path / "data" / "tmp" / "body-x.part").write_bytes(b"partial")
        report = store.reconcile()
        assert report.rows_without_bytes == [b.id] and len(report.orphan_blobs) == 1 and report.temp_files
        assert not orphan.exists() and store.get_upload(b.id).stored_at is None
        assert [p.id for p in store.list_profiles(session.id)] == [a.id]
        assert not store.reconcile(), "nothing left to fix"
    finally:
        store.close()


def test_a_held_claim_is_renewed_past_its_lease_and_taken_by_another_host_once_it_runs_out(tmp_path):
    from whylogs_songbird.server.ingest import ClaimHeartbeat

    mine, theirs = Store(tmp_path / "d"), Store(tmp_path / "d")  # two hosts on one store
    mine.metadata.owner, theirs.metadata.owner = "host-a", "host-b"
    try:
        session = mine.create_session("u")
        upload = mine.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS)
        store_profile_bytes(mine, upload.id, make_profile_bytes())
        heartbeat = ClaimHeartbeat(mine, lease_ms=300)
        assert [u.id for u in mine.metadata.claim_ingest(lease_ms=300)] == [upload.id]
        with heartbeat.hold(upload.id):
            time.sleep(0.9)  # three leases: only the heartbeat keeps the claim
            assert theirs.metadata.claim_ingest(lease_ms=300) == [], "a live claim was taken"
            assert mine.get_upload(upload.id).ingest_lease > now_ms()
        assert theirs.metadata.renew_ingest_claims([upload.id], lease_ms=300) == set(), "not its claim"
        wait_for(lambda: bool(theirs.metadata.claim_ingest(lease_ms=300)), "the ended claim is taken over", 5)
        assert mine.metadata.renew_ingest_claims([upload.id], lease_ms=300) == set(), "a lost claim is not renewed"
        assert theirs.get_upload(upload.id).ingest_tries == 1, "the dead claim (of it alone) is its failed try"
    finally:
        mine.close()
        theirs.close()


@pytest.mark.parametrize("lease", [0.1, 0, -5, True, "30"])
def test_a_claim_lease_too_short_for_its_heartbeat_or_not_a_number_is_refused(lease):
    from whylogs_songbird.server.config import ServerConfig

    with pytest.raises(ValueError, match="claim_lease_seconds must be a number of seconds, at least 0.3"):
        ServerConfig(claim_lease_seconds=lease)
    assert ServerConfig(claim_lease_seconds=0.3).claim_lease_seconds == 0.3


# -- the storage seam ---------------------------------------------------------------------------


def test_open_storage_gives_the_embedded_stores_and_refuses_unknown_urls(tmp_path):
    metadata, blobs = open_storage(StorageSpec(data_dir=tmp_path / "d"))
    try:
        assert isinstance(metadata, MetadataStore) and isinstance(blobs, BlobStore)
        assert blobs.presign_put("profiles/x", 60) is None, "the API server receives embedded PUTs itself"
    finally:
        metadata.close()
        blobs.close()
    db = tmp_path / "elsewhere" / "meta.sqlite3"
    metadata, blobs = open_storage(
        StorageSpec(data_dir=tmp_path / "d", database_url=f"sqlite:///{db}", blob_store=f"file://{tmp_path / 'blobs'}")
    )
    metadata.close()
    blobs.close()
    assert db.is_file() and (tmp_path / "blobs" / "profiles").is_dir()
    for bad in ({"database_url": "mysql://x/y"}, {"blob_store": "gs://bucket"}):
        with pytest.raises(StorageConfigError, match="must start with"):
            open_storage(StorageSpec(data_dir=tmp_path / "d", **bad))


def test_only_a_postgresql_spec_names_a_shared_store(tmp_path):
    shared = {"postgresql://h/db": True, "POSTGRES://h/db": True, f"sqlite:///{tmp_path}/m": False, None: False}
    assert {url: StorageSpec(data_dir=tmp_path, database_url=url).shared for url in shared} == shared


def test_counts_are_batched_in_memory_and_written_on_close(tmp_path):
    store = Store(tmp_path / "d")
    for _ in range(50):
        store.count("upload")
    store.close()  # before the background flush: closing writes them
    reopened = Store(tmp_path / "d")
    try:
        assert reopened.stats()["upload"] == 50
        reopened.count("upload")
        reopened.reset_stats()
        assert reopened.stats()["upload"] == 0, "a reset drops counts not written yet too"
    finally:
        reopened.close()


def test_counters_and_derived_artefacts_live_in_the_store_shared_by_every_process(tmp_path):
    one, two = Store(tmp_path / "d"), Store(tmp_path / "d")
    try:
        one.count("put")
        two.count("put")
        assert one.stats()["put"] >= 1, "a process sees its own counts at once"
        # counts are written in batches by a background thread: another process sees them shortly
        wait_for(lambda: one.stats()["put"] == two.stats()["put"] == 2, "both counts in the shared store")
        session = one.create_session("u")
        one.metadata.put_derived(session.id, "timeline:a", b"1")
        one.metadata.put_derived(session.id, "timeline:b", b"2")
        one.metadata.put_derived(session.id, "other", b"3")
        assert two.metadata.get_derived(session.id, "timeline:a") == b"1"
        assert two.metadata.drop_derived(session.id, "timeline:") == 2
        assert one.metadata.get_derived(session.id, "timeline:b") is None
        assert one.metadata.get_derived(session.id, "other") == b"3"
    finally:
        one.close()
        two.close()


def test_an_older_data_dir_is_migrated_and_its_profiles_summarised(tmp_path):
    import sqlite3

    data_dir = tmp_path / "old"
    (data_dir / "profiles").mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "songbird.sqlite3")
    conn.executescript(FIRST_SCHEMA)
    sid, uid = "session-" + "A" * 24, "log-" + "B" * 24
    data = make_profile_bytes()
    (data_dir / "profiles" / sid).mkdir()
    (data_dir / "profiles" / sid / f"{uid}.bin").write_bytes(data)
    conn.execute("INSERT INTO sessions VALUES (?, 'u', 'guest', 1, NULL, NULL)", (sid,))
    conn.execute(
        "INSERT INTO uploads VALUES (?, ?, 'batch', ?, NULL, '[]', 1, 2, 3, ?, ?, ?)",
        (uid, sid, TS, len(data), hashlib.sha256(data).hexdigest(), f"profiles/{sid}/{uid}.bin"),
    )
    conn.commit()
    conn.close()
    with LocalServer(data_dir=data_dir) as server:
        wait_for(lambda: server.store.get_upload(uid).ingest_state == "ready", "an old profile is summarised")
        page = requests.get(f"{server.url}/resources/model-1/profiles?profile={TS}&sessionToken={sid}", timeout=TIMEOUT)
        assert page.status_code == 200


def test_a_missing_path_is_refused_by_the_blob_store(tmp_path):
    store = Store(tmp_path / "d")
    try:
        for bad in ("../x", "profiles/../../x", "profiles/session-AAAAAAAAAAAAAAAAAAAA/../x.bin", "tmp/x"):
            with pytest.raises(ValueError):
                store.blobs.path(bad)
    finally:
        store.close()


class _PresigningFiles(FileBlobStore):
    """A file blob store that claims to hand out presigned URLs, standing in for S3 in a unit test."""

    presigns_uploads = True

    def presign_put(self, key, ttl_seconds):
        return f"http://127.0.0.1:9/{key}?ttl={ttl_seconds}"


def test_uploads_that_land_straight_in_a_presigning_blob_store_are_learned(tmp_path):
    store = Store(tmp_path, metadata=SqliteMetadataStore(tmp_path / "m.sqlite3"), blobs=_PresigningFiles(tmp_path))
    try:
        session = store.create_session("u")
        first, second, unused = sorted(  # in the store's order: slots made in one millisecond go by id
            (store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS) for _ in range(3)),
            key=lambda upload: (upload.created_at, upload.id),
        )
        assert store.upload_url(first, 60).startswith("http://127.0.0.1:9/profiles/")
        data = make_profile_bytes()
        for upload in (first, second):  # what a client's PUT to the presigned URL leaves behind
            store.blobs.put_bytes(blob_key(session.id, upload.id), data)
        learned = store.learn_landed(session.id)
        assert [u.id for u in learned] == [first.id, second.id]
        assert [p.id for p in store.list_profiles(session.id)] == [first.id], "the second was a duplicate"
        assert store.get_upload(second.id).duplicate_of == first.id
        assert store.get_upload(first.id).ingest_state == "pending" and store.get_upload(unused.id).stored_at is None
        assert store.learn_landed(session.id) == []
    finally:
        store.close()
