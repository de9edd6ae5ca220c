"""The team server: PostgreSQL + S3 (SeaweedFS), over real HTTP, with presigned S3 upload URLs."""

import hashlib
import os
import signal
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from conftest import TEST_API_KEYS, health, make_profile_bytes
from pages import settled_page
from server_processes import wait_for
from team_server import TS, link, new_session, new_slot, server_process  # noqa: F401

from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.serving import open_store
from whylogs_songbird.server.storage.postgres import PostgresMetadataStore
from whylogs_songbird.server.storage.s3 import S3BlobStore
from whylogs_songbird.server.store import blob_key


@pytest.fixture
def storage_config(request, monkeypatch):
    """Every server in this module runs on PostgreSQL + S3."""
    from conftest import make_store_config

    return make_store_config("team", request, monkeypatch)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode(dict(parse_qsl(parts.query)) | changes)))


def test_upload_urls_are_presigned_s3_urls_and_bytes_never_reach_the_server(server, storage_config, s3_service):
    session_id = new_session(server.url)
    slot = new_slot(server.url, session_id)
    upload_url = slot["uploadUrl"]
    assert upload_url.startswith(s3_service.endpoint_url + "/")  # the object store, not the API server
    query = dict(parse_qsl(urlsplit(upload_url).query))
    assert query["X-Amz-Expires"] == str(server.config.url_ttl_seconds)
    assert "X-Amz-Signature" in query and s3_service.secret_key not in upload_url

    assert link(server.url, session_id, [TS]).status_code == 404  # nothing landed yet
    data = make_profile_bytes(seed=3)
    assert requests.put(upload_url, data=data, timeout=10).status_code == 200
    answer = link(server.url, session_id, [TS])  # the server looks: the upload landed
    assert answer.status_code == 200
    assert requests.get(answer.json()["observatoryUrl"], timeout=30).status_code == 200

    [profile] = server.store.list_profiles(session_id)
    assert (profile.id, profile.size, profile.sha256) == (slot["id"], len(data), hashlib.sha256(data).hexdigest())
    assert server.store.read_profile_bytes(profile) == data
    assert server.stats()["put"] == 0  # no PUT went through the API server


def test_the_object_store_refuses_tampered_upload_urls_and_nothing_is_recorded(server):
    session_id = new_session(server.url)
    slot = new_slot(server.url, session_id)
    other = new_slot(server.url, session_id, ts=TS + 1)
    url = slot["uploadUrl"]
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    forged = [
        with_query(url, **{"X-Amz-Signature": signature[::-1]}),
        with_query(url, **{"X-Amz-Expires": "604800"}),
        url.replace(slot["id"], other["id"]),  # another slot's key with this slot's signature
    ]
    for bad in forged:
        assert requests.put(bad, data=make_profile_bytes(), timeout=10).status_code == 403
    assert link(server.url, session_id, [TS]).status_code == 404
    assert link(server.url, session_id, [TS + 1]).status_code == 404
    assert server.store.list_profiles(session_id) == []


def test_references_and_segments_land_through_presigned_urls(server):
    session_id = new_session(server.url)
    refs = requests.post(
        f"{server.url}/v0/sessions/{session_id}/references",
        json={"references": [{"alias": "train"}, {"alias": "test"}]},
        timeout=10,
    ).json()["references"]
    seg = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload",
        json={"datasetTimestamp": TS, "segmentTags": [{"key": "city", "value": "a b/c"}]},
        timeout=10,
    ).json()
    for i, slot in enumerate([*refs, seg]):
        assert requests.put(slot["uploadUrl"], data=make_profile_bytes(seed=i), timeout=10).status_code == 200
    answer = link(server.url, session_id, [TS], [refs[0]["id"], refs[1]["id"]])
    assert answer.status_code == 200, answer.text
    page = requests.get(f"{server.url}/sessions/{session_id}", timeout=30)
    assert page.status_code == 200 and "train" in page.text and "test" in page.text
    assert sorted(p.alias or "" for p in server.store.list_profiles(session_id, "reference")) == ["test", "train"]


def test_bytes_that_fail_the_cheap_check_are_an_invalid_profile_never_deserialized(server):
    from profile_crafting import shared_chunk

    session_id = new_session(server.url)
    crafted = shared_chunk(make_profile_bytes())  # 10,000 columns sharing one chunk
    for ts, data in ((TS, b"not a whylogs profile"), (TS + 1, crafted), (TS + 2, make_profile_bytes() + b"junk")):
        slot = new_slot(server.url, session_id, ts=ts)
        assert requests.put(slot["uploadUrl"], data=data, timeout=10).status_code == 200  # S3 takes any bytes
        answer = link(server.url, session_id, [ts])
        assert answer.status_code == 200
        [profile] = server.store.find_batch_profiles(session_id, ts)
        assert profile.invalid and "well-formed" in (profile.ingest_error or ""), profile
        page = requests.get(answer.json()["observatoryUrl"], timeout=30)
        assert page.status_code != 500 and "well-formed" in page.text


def test_a_claimed_session_keeps_late_uploads_out(server):
    session_id = new_session(server.url)
    slot = new_slot(server.url, session_id)
    claim = requests.post(
        f"{server.url}/v0/sessions/{session_id}/claim",
        params={"org_id": "org-test"},
        headers={"X-API-Key": TEST_API_KEYS[0]},
        timeout=10,
    )
    assert claim.status_code == 200
    # The object store still takes the bytes (its URL is valid), but the server never records them.
    assert requests.put(slot["uploadUrl"], data=make_profile_bytes(), timeout=10).status_code == 200
    assert server.store.list_profiles(session_id) == []


#: The threads that may look at the bucket for landed PUTs: the server's background workers.
BACKGROUND_LOOKERS = ("songbird-ingest-", "songbird-slot-sweeper", "songbird-purge")


def test_pages_never_list_the_bucket_and_a_profile_page_shows_its_landed_upload_pending_then_summarised(server):
    looks: list[tuple[str, str]] = []  # (thread, what): every listing and HEAD of the S3 backend
    blobs = server.store.blobs
    for name in ("list_stamped", "size"):  # list_keys and list_sizes list through list_stamped
        real = getattr(blobs, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            looks.append((threading.current_thread().name, _name))
            return _real(*args, **kwargs)

        setattr(blobs, name, counted)

    def by_requests():
        return [look for look in looks if not look[0].startswith(BACKGROUND_LOOKERS)]

    session_id = new_session(server.url)
    slots = [new_slot(server.url, session_id, ts=TS + i) for i in range(10)]  # > 8: a look lists the session
    pages = [
        f"{server.url}/sessions/{session_id}",
        f"{server.url}/sessions/{session_id}/timeline",
        f"{server.url}/api/v1/sessions/{session_id}/timeline?granularity=day",
    ]
    awaited = requests.get(slots[0]["observatoryUrl"], timeout=30)  # its URL was given out, nothing PUT yet
    assert awaited.status_code == 202 and awaited.headers["Retry-After"] == "2", awaited.text[:300]
    assert "not been received yet" in awaited.text and '<meta http-equiv="refresh"' in awaited.text
    data = make_profile_bytes(seed=4)
    assert requests.put(slots[0]["uploadUrl"], data=data, timeout=10).status_code == 200
    deadline = time.monotonic() + 60
    while (page := requests.get(slots[0]["observatoryUrl"], timeout=30)).status_code != 200:
        assert page.status_code == 202, page.text[:300]  # not received, then being summarised: pending
        assert time.monotonic() < deadline, "the ingest worker did not learn the landed upload"
        for url in pages:
            before = len(by_requests())
            assert requests.get(url, timeout=30).status_code == 200
            assert by_requests()[before:] == [], f"{url} looked at the bucket itself"
        time.sleep(0.2)
    assert 'class="profile-card"' in page.text
    assert [p.id for p in server.store.list_profiles(session_id)] == [slots[0]["id"]]
    # the profile's own page looked at its one key (a HEAD per request while it was awaited), never listed
    assert {what for _, what in by_requests()} <= {"size"}
    assert any(thread.startswith("songbird-ingest-") and what == "list_stamped" for thread, what in looks), (
        "the ingest worker listed the session"
    )


# -- crash and restart ------------------------------------------------------------------------------


def test_kill_9_during_uploads_then_restart_records_no_profile_without_bytes(storage_config, s3_service, tmp_path):
    env = {**os.environ, **s3_service.env(), "WHYLOGS_NO_ANALYTICS": "True"}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    sent: dict[str, bytes] = {}  # upload id -> bytes the object store accepted
    lock = threading.Lock()
    stop = threading.Event()

    with server_process(data_dir, storage_config, env) as (url, proc):
        session_id = new_session(url)
        first = new_slot(url, session_id, ts=TS - 1)
        assert requests.put(first["uploadUrl"], data=make_profile_bytes(seed=99), timeout=10).ok
        assert link(url, session_id, [TS - 1]).status_code == 200  # recorded before the crash

        variants = [make_profile_bytes(n_rows=3, seed=n) for n in range(4)]

        def client(n: int) -> None:
            data = variants[n]
            i = 0
            with requests.Session() as http:
                while not stop.is_set():
                    i += 1  # a timestamp per upload: none is a duplicate of another
                    try:
                        slot = http.post(
                            f"{url}/v0/sessions/{session_id}/upload",
                            json={"datasetTimestamp": TS + n * 100_000 + i},
                            timeout=10,
                        ).json()
                    except requests.RequestException:
                        return  # the server is gone
                    if http.put(slot["uploadUrl"], data=data, timeout=10).status_code == 200:
                        with lock:
                            sent[slot["id"]] = data

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(sent) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-flight: slots handed out, PUTs in progress
        proc.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(sent) >= 12

    blobs = S3BlobStore(storage_config["blob_store"], endpoint_url=storage_config["s3_endpoint_url"])
    metadata = PostgresMetadataStore(storage_config["database_url"])
    try:
        # While the server is down: bytes of an upload nobody knows (to be removed), and a
        # recorded profile whose bytes vanished (to be forgotten, not shown without bytes).
        orphan = blob_key("session-" + "O" * 22, "log-" + "O" * 22)
        blobs.put_bytes(orphan, b"orphan")
        [lost] = metadata.find_batch_profiles(session_id, TS - 1)
        blobs.delete(lost.path)

        with server_process(data_dir, storage_config, env) as (url, _):
            assert requests.get(f"{url}/healthz", timeout=10).ok
            # A start lists nothing (its cost must not grow with the history): the team's scan for
            # leftovers runs from one host's sweeper every few hours. Run it now, beside the server.
            scanner = open_store(ServerConfig(data_dir=tmp_path / "scanner", **storage_config))
            try:
                report = scanner.scan_orphans()
            finally:
                scanner.close()
            assert orphan in report.orphan_blobs and not blobs.exists(orphan)
            wait_for(
                lambda: set(sent) <= {p.id for p in metadata.list_profiles(session_id)},
                "every PUT the object store accepted is recorded after the restart",
            )
            profiles = {p.id: p for p in metadata.list_profiles(session_id)}
            # Every PUT the object store accepted is a profile now, with exactly those bytes ...
            assert set(sent) <= set(profiles)
            for upload_id, data in sent.items():
                assert profiles[upload_id].sha256 == hashlib.sha256(data).hexdigest()
            # ... and no profile is recorded without its bytes.
            for profile in profiles.values():
                assert blobs.size(profile.path) == profile.size, profile.id
            assert lost.id not in profiles and link(url, session_id, [TS - 1]).status_code == 404
            answer = link(url, session_id, [profiles[next(iter(sent))].dataset_timestamp])
            assert answer.status_code == 200 and requests.get(answer.json()["observatoryUrl"], timeout=30).ok
    finally:
        metadata.close()
        blobs.close()


def test_several_workers_share_postgres_and_s3(storage_config, tmp_path):
    import concurrent.futures

    from server_processes import start_server_process, stop, wait_for

    process, url = start_server_process(
        tmp_path / "data",
        "--workers",
        "2",
        "--database-url",
        storage_config["database_url"],
        "--blob-store",
        storage_config["blob_store"],
        "--s3-endpoint-url",
        storage_config["s3_endpoint_url"],
    )  # the AWS variables come from this process's environment
    try:
        pids = set()

        def seen_both():
            pids.add(health(url, tmp_path / "data")["pid"])  # a new connection each time
            return len(pids) >= 2

        wait_for(seen_both, "connections are spread over two processes")

        def one_upload(i):
            sid = new_session(url)
            slot = new_slot(url, sid, ts=TS + i)
            assert requests.put(slot["uploadUrl"], data=make_profile_bytes(seed=i), timeout=10).status_code == 200
            page = settled_page(slot["observatoryUrl"])  # pending until a worker learns it landed
            assert page.status_code == 200, page.text[:300]
            return sid

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            sessions = list(pool.map(one_upload, range(8)))
        assert len(set(sessions)) == 8

        def counted():
            stats = requests.get(f"{url}/_local/stats", timeout=10).json()
            return (stats["create_session"], stats["upload"], stats["put"]) == (8, 8, 0)

        # each process writes its counts to the shared store in batches (within Store.COUNT_FLUSH_SECONDS)
        wait_for(counted, "every process's counts reach PostgreSQL")
        for _ in range(4):  # whichever process answers, the counters (in PostgreSQL) are the same
            stats = requests.get(f"{url}/_local/stats", timeout=10).json()
            assert (stats["create_session"], stats["upload"], stats["put"]) == (8, 8, 0), stats
            assert health(url, tmp_path / "data")["sessions"] == 8
    finally:
        stop(process)


# -- presigned URLs stay writable until they expire: what the server checked is what it keeps ------


def objects(blobs: S3BlobStore, session_id: str) -> dict[str, bytes]:
    return {key: blobs.get_bytes(key) for key in blobs.list_keys(f"profiles/{session_id}/")}


def converges(blobs: S3BlobStore, session_id: str, expected: dict[str, bytes]) -> None:
    """Wait until the session's objects are ``expected``: whichever process recorded an upload
    removes its landed object right after its row, maybe after the request that looked returned."""
    from server_processes import wait_for

    wait_for(lambda: objects(blobs, session_id) == expected, f"the objects are {sorted(expected)}", timeout=30)


def test_a_put_to_the_same_url_after_the_check_never_replaces_the_profile(server_factory, storage_config):
    from pages import header_field

    server = server_factory()
    session_id = new_session(server.url)
    slot = new_slot(server.url, session_id)
    good, other = make_profile_bytes(n_rows=10, seed=1), make_profile_bytes(n_rows=40, seed=9)
    assert requests.put(slot["uploadUrl"], data=good, timeout=10).status_code == 200
    answer = link(server.url, session_id, [TS])  # the server learns and checks the bytes
    assert answer.status_code == 200
    page_url = answer.json()["observatoryUrl"]
    assert header_field(requests.get(page_url, timeout=30).text, 1, "rows")[0] == "10"
    [profile] = server.store.list_profiles(session_id)
    checked = blob_key(session_id, slot["id"], hashlib.sha256(good).hexdigest())
    assert (profile.path, profile.size) == (checked, len(good))
    converges(server.store.blobs, session_id, {checked: good})  # the landed object was moved

    # The URL is still valid: S3 takes new bytes (a well-formed profile, then junk) under the landed key.
    for data in (other, b"junk" * 500):
        assert requests.put(slot["uploadUrl"], data=data, timeout=10).status_code == 200
        assert link(server.url, session_id, [TS]).status_code == 200
        page = requests.get(page_url, timeout=30)
        assert page.status_code == 200 and header_field(page.text, 1, "rows")[0] == "10"
        assert server.store.list_profiles(session_id) == [server.store.get_upload(profile.id)]
        now = server.store.get_upload(profile.id)
        assert (now.path, now.size, now.sha256, now.invalid) == (checked, len(good), profile.sha256, False)
        assert server.store.read_profile_bytes(now) == good
        assert objects(server.store.blobs, session_id) == {checked: good, blob_key(session_id, slot["id"]): data}

    # The team's scan for leftovers (one host's sweeper, now and then; a start lists nothing)
    # removes what the late PUT left and keeps the checked bytes.
    again = server_factory()
    assert objects(again.store.blobs, session_id) == {checked: good, blob_key(session_id, slot["id"]): b"junk" * 500}
    assert again.store.scan_orphans(grace_seconds=0).orphan_blobs == [blob_key(session_id, slot["id"])]
    assert objects(again.store.blobs, session_id) == {checked: good}
    assert header_field(requests.get(page_url.replace(server.url, again.url), timeout=30).text, 1, "rows")[0] == "10"


def test_bytes_swapped_under_a_recorded_key_are_never_read_as_the_checked_ones(server, s3_service):
    """Defence in depth (and rows an older server recorded under the landed key): bytes are
    checked against the recorded size and sha256 whenever they are read."""
    from whylogs_songbird.server.store import StoredBytesChangedError

    session_id = new_session(server.url)
    slot = new_slot(server.url, session_id)
    good = make_profile_bytes(seed=2)
    assert requests.put(slot["uploadUrl"], data=good, timeout=10).status_code == 200
    assert link(server.url, session_id, [TS]).status_code == 200
    [profile] = server.store.list_profiles(session_id)
    for swapped in (make_profile_bytes(seed=3), good + b"x" * 10_000, b""):
        server.store.blobs.put_bytes(profile.path, swapped)
        with pytest.raises(StoredBytesChangedError):
            server.store.read_profile_bytes(profile)
    server.store.blobs.put_bytes(profile.path, good)
    assert server.store.read_profile_bytes(profile) == good


def test_an_oversize_landed_object_is_refused_by_its_size_without_being_read(server_factory):
    good = make_profile_bytes(seed=4)
    server = server_factory(max_upload_bytes=len(good) + 100)
    blobs = server.store.blobs
    reads: list[str] = []
    for name in ("read_version", "get_bytes", "open"):  # record every read of an object's bytes
        method = getattr(blobs, name)

        def recorded(key, *args, _method=method):
            reads.append(key)
            return _method(key, *args)

        setattr(blobs, name, recorded)
    session_id = new_session(server.url)
    big, small = new_slot(server.url, session_id), new_slot(server.url, session_id, ts=TS + 1)
    oversize = os.urandom(len(good) + 101)
    assert requests.put(big["uploadUrl"], data=oversize, timeout=10).status_code == 200  # S3 takes any size
    assert requests.put(small["uploadUrl"], data=good, timeout=10).status_code == 200
    answer = link(server.url, session_id, [TS, TS + 1])
    assert answer.status_code == 200
    refused = server.store.get_upload(big["id"])
    assert refused.invalid and refused.path is None and refused.size == len(oversize)
    assert f"upload limit of {len(good) + 100} bytes" in (refused.ingest_error or "")
    assert blob_key(session_id, big["id"]) not in reads, "the oversize object was read"
    converges(blobs, session_id, {server.store.get_upload(small["id"]).path: good})
    page = requests.get(answer.json()["observatoryUrl"], timeout=30)
    assert page.status_code == 422 and "upload limit" in page.text  # the page names the refused profile
    # A later PUT to the refused slot's URL is never learned (and is removed at the next start).
    assert requests.put(big["uploadUrl"], data=good, timeout=10).status_code == 200
    assert link(server.url, session_id, [TS]).status_code == 200
    assert server.store.get_upload(big["id"]) == refused


def test_two_hosts_learn_each_landed_upload_once(storage_config, s3_service, tmp_path):
    import concurrent.futures

    env = {**os.environ, **s3_service.env(), "WHYLOGS_NO_ANALYTICS": "True"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        server_process(tmp_path / "a", storage_config, env) as (first, _),
        server_process(tmp_path / "b", storage_config, env) as (second, _),
    ):
        session_id = new_session(first)
        bodies = {}
        for i in range(12):
            slot = new_slot(first if i % 2 else second, session_id, ts=TS + i)
            bodies[slot["id"]] = make_profile_bytes(n_rows=5 + i, seed=i)
            assert requests.put(slot["uploadUrl"], data=bodies[slot["id"]], timeout=10).status_code == 200
        # Both hosts look at once (and both ingest workers look when idle).
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda url: link(url, session_id, [TS]), [first, second] * 3))
        assert [a.status_code for a in answers] == [200] * 6

        blobs = S3BlobStore(storage_config["blob_store"], endpoint_url=storage_config["s3_endpoint_url"])
        metadata = PostgresMetadataStore(storage_config["database_url"])
        try:
            profiles = metadata.list_profiles(session_id)
            assert sorted(p.id for p in profiles) == sorted(bodies), "each upload recorded once"
            for p in profiles:
                sha = hashlib.sha256(bodies[p.id]).hexdigest()
                assert (p.sha256, p.path, p.duplicate_of) == (sha, blob_key(session_id, p.id, sha), None)
            # exactly the checked copies are left: no landed object, no second copy
            converges(blobs, session_id, {p.path: bodies[p.id] for p in profiles})
        finally:
            metadata.close()
            blobs.close()
        for url in (first, second):
            # 202 while a host still summarises a profile the other learnt (the page reloads itself)
            page = settled_page(answers[0].json()["observatoryUrl"].replace(first, url))
            assert page.status_code == 200
