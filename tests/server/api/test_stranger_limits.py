"""What one client without credentials can cost (issue 20, deliverable 3), over real HTTP: expired
slots are swept, open slots and the profile quota are capped per session, sessions and slots are
rate limited per client, one address cannot take every connection, and guests can be turned off."""

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from conftest import both_stores, make_profile_bytes

from whylogs_songbird import SongbirdClient
from whylogs_songbird.models import MAX_SEGMENT_TAGS, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH
from whylogs_songbird.server.common import client_key
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.ratelimits import SLOT_COST_BYTES, TokenBuckets, slot_cost
from whylogs_songbird.server.store import NewUpload, Store, blob_key

TS = 1_700_000_000_000
TIMEOUT = 10
#: A second loopback address: another client, as the server sees it.
OTHER_CLIENT = "127.0.0.2"


def post(server, path, body, source=None):
    """POST JSON from ``source`` (an address to connect from; None: the default); (status, headers, body)."""
    if source is None:
        r = requests.post(server.url + path, json=body, timeout=TIMEOUT)
        return r.status_code, r.headers, r.json()
    conn = http.client.HTTPConnection(
        "127.0.0.1", urlsplit(server.url).port, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


def new_session(server):
    status, _, body = post(server, "/v0/sessions", {"userId": "u"})
    assert status == 200, body
    return body["id"]


def ask_slot(server, session_id, tags=()):
    return post(
        server,
        f"/v0/sessions/{session_id}/upload",
        {"datasetTimestamp": TS, "segmentTags": [{"key": k, "value": v} for k, v in tags]},
    )


def ask_references(server, session_id, n):
    return post(server, f"/v0/sessions/{session_id}/references", {"references": [{}] * n})


def wait_until(condition, what, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def open_slots(store):
    """Every slot of the store not stored (expired or not)."""
    return store.metadata.expired_slots(expired_before=2**62, limit=10_000)


# -- slots never PUT expire and are deleted --------------------------------------------------------


@both_stores
def test_slots_never_put_are_deleted_once_their_url_expired(server_factory):
    server = server_factory(url_ttl_seconds=2, slot_sweep_seconds=0.2, slot_sweep_grace_seconds=0)
    session_id = new_session(server)
    long_tags = [(f"k{i}", "v" * 1000) for i in range(8)]
    status, _, kept = ask_slot(server, session_id, tags=[("team", "a")])
    assert status == 200
    assert requests.put(kept["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT).status_code == 200
    unused = [ask_slot(server, session_id, tags=long_tags)[2]["id"]]
    unused += [ref["id"] for ref in ask_references(server, session_id, 5)[2]["references"]]
    assert all(server.store.get_upload(upload_id) is not None for upload_id in unused)

    wait_until(lambda: all(server.store.get_upload(u) is None for u in unused), "the unused slots are deleted")
    assert open_slots(server.store) == []  # their rows, tags included, are gone
    wait_until(lambda: server.store.get_upload(kept["id"]).stored, "the PUT profile is recorded")
    assert [u.id for u in server.store.list_profiles(session_id)] == [kept["id"]]
    assert server.store.get_upload(kept["id"]).segment_tags == (("team", "a"),)


@pytest.mark.parametrize("storage_config", ["team"], indirect=True)
def test_the_sweep_keeps_slots_whose_presigned_object_landed_late_even_with_two_hosts(storage_config, tmp_path):
    """Two stores on one database and bucket stand for two hosts sweeping at once."""
    config = ServerConfig(data_dir=tmp_path / "d", **storage_config)
    hosts = [Store.open(config), Store.open(config)]
    try:
        store = hosts[0]
        session = store.create_session("u")
        slots = store.create_uploads(
            session.id, [NewUpload("batch", TS + i, segment_tags=(("i", str(i)),)) for i in range(30)], ttl_seconds=0
        )  # expired at once: the URLs are of no use any more
        landed = slots[::3]
        for slot in landed:  # a PUT that began before the URL expired and finished after
            store.blobs.put_bytes(blob_key(session.id, slot.id), make_profile_bytes())
        time.sleep(1.1)  # expiry is in whole seconds
        with ThreadPoolExecutor(2) as pool:
            deleted = sum(pool.map(lambda host: host.sweep_expired_slots(grace_seconds=0), hosts))
        assert deleted == len(slots) - len(landed)
        for slot in slots:
            now = store.get_upload(slot.id)
            if slot in landed:
                assert now is not None and now.stored, slot.id
            else:
                assert now is None, slot.id
        assert open_slots(store) == []
        assert store.sweep_expired_slots(grace_seconds=0) == 0  # nothing left: one indexed query
    finally:
        for host in hosts:
            host.close()


def test_the_sweep_leaves_slots_alone_within_the_grace(server_factory):
    server = server_factory(url_ttl_seconds=1)  # the default grace: minutes after expiry
    session_id = new_session(server)
    slot = ask_slot(server, session_id)[2]
    time.sleep(2.1)
    assert server.store.sweep_expired_slots() == 0
    assert server.store.get_upload(slot["id"]) is not None
    assert server.store.sweep_expired_slots(grace_seconds=0) == 1


# -- open slots per session ---------------------------------------------------------------------


@both_stores
def test_open_slots_are_capped_per_session_at_n_and_refused_at_n_plus_one(server_factory):
    server = server_factory(max_open_slots=3)
    session_id = new_session(server)
    status, _, body = ask_references(server, session_id, 3)
    assert status == 200 and len(body["references"]) == 3  # N
    status, headers, refused = ask_slot(server, session_id)  # N + 1
    assert status == 429, refused
    assert "--max-open-slots" in refused["message"] and "3" in refused["message"]
    assert "PUT the profiles" in refused["message"] and headers["Retry-After"] == "1"
    assert len(open_slots(server.store)) == 3  # nothing was created

    first = body["references"][0]
    assert requests.put(first["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT).status_code == 200
    wait_until(lambda: server.store.get_upload(first["id"]).stored, "the PUT is recorded")  # presigned: learned
    assert ask_slot(server, session_id)[0] == 200  # a PUT frees its place
    assert ask_slot(server, session_id)[0] == 429

    status, headers, refused = ask_references(server, new_session(server), 4)  # more than N at once
    assert status == 429 and "at most 3 per request" in refused["message"]
    assert "Retry-After" not in headers  # waiting does not help


# -- the profile quota counts open slots --------------------------------------------------------


@both_stores
def test_the_profile_quota_counts_open_slots(server_factory):
    server = server_factory(max_session_profiles=2)
    session_id = new_session(server)
    answers = [ask_slot(server, session_id) for _ in range(50)]  # the reported attack: 50 of 50 granted
    assert [status for status, _, _ in answers].count(200) == 2
    refusal = answers[-1]
    assert refusal[0] == 403 and "--max-session-profiles" in refusal[2]["message"]
    assert "open upload slots" in refusal[2]["message"]
    assert ask_references(server, session_id, 1)[0] == 403

    racing = new_session(server)  # counted in the transaction that creates the slots: exact under a race
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: ask_slot(server, racing)[0], range(20)))
    assert statuses.count(200) == 2 and statuses.count(403) == 18
    assert len([s for s in open_slots(server.store) if s.session_id == racing]) == 2


# -- per-client rate limits ---------------------------------------------------------------------


def test_session_creation_is_rate_limited_per_client_with_retry_after(server_factory):
    server = server_factory(session_rate=60, session_burst=3)
    for _ in range(3):
        new_session(server)
    status, headers, body = post(server, "/v0/sessions", {"userId": "u"})
    assert status == 429, body
    assert "--session-rate" in body["message"] and "--session-burst" in body["message"]
    assert int(headers["Retry-After"]) >= 1
    assert server.store.session_count() == 3
    # another client has its own allowance
    status, _, body = post(server, "/v0/sessions", {"userId": "u"}, source=OTHER_CLIENT)
    assert status == 200, body
    # the client waits as told and tries again
    client = SongbirdClient(server.url, max_retries=3)
    try:
        assert client.create_session("u").id.startswith("session-")
    finally:
        client.close()


def test_slot_requests_are_rate_limited_per_client_by_slots_and_bytes(server_factory):
    server = server_factory(slot_rate=1, slot_burst=5, session_rate=0)
    session_id = new_session(server)
    assert ask_references(server, session_id, 5)[0] == 200  # a batch costs one token per slot
    status, headers, body = ask_slot(server, session_id)
    assert status == 429 and "--slot-rate" in body["message"] and int(headers["Retry-After"]) >= 1
    assert post(server, f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS}, source=OTHER_CLIENT)[0] == 200
    # a slot carrying many bytes of tags costs more than the whole burst: refused, not worth waiting for
    heavy = [(f"{i:03d}" * (MAX_TAG_KEY_LENGTH // 3), "v" * MAX_TAG_VALUE_LENGTH) for i in range(MAX_SEGMENT_TAGS)]
    status, headers, body = post(
        server,
        f"/v0/sessions/{session_id}/upload",
        {"datasetTimestamp": TS, "segmentTags": [{"key": k, "value": v} for k, v in heavy]},
        source="127.0.0.3",
    )
    assert status == 429 and "ask for fewer slots" in body["message"] and "Retry-After" not in headers
    # the writer's client waits as told and gets its slot
    client = SongbirdClient(server.url, max_retries=3)
    try:
        assert client.create_dataset_profile_upload(session_id, TS).id.startswith("log-")
    finally:
        client.close()


def test_token_buckets_refill_at_their_rate_and_forget_idle_clients():
    buckets = TokenBuckets(rate=2, burst=4, max_clients=2)
    assert buckets.take("a", 4, now=0.0) == 0.0
    assert buckets.take("a", 1, now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", 1, now=0.5) == 0.0  # refilled one token in half a second
    assert buckets.take("a", 5, now=100.0) == float("inf")  # more than the burst: never
    assert buckets.take("a", 4, now=100.0) == 0.0  # a full bucket again, not more
    assert buckets.take("a", 1, now=100.0) > 0
    buckets.take("b", 1, now=100.0)
    buckets.take("c", 1, now=100.0)  # "a" was the least recently used: forgotten, that is full
    assert buckets.take("a", 4, now=100.0) == 0.0
    assert slot_cost([]) == 1 and slot_cost(["x" * SLOT_COST_BYTES]) == 1
    assert slot_cost(["x" * SLOT_COST_BYTES, "y"]) == 2
    assert slot_cost(["\U0001f600" * 1024] * 64) == 64  # counted in UTF-8 bytes
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1" and client_key("10.0.0.1") == "10.0.0.1"


# -- connections per client ---------------------------------------------------------------------


def read_until_closed(sock, deadline=30.0):
    sock.settimeout(deadline)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_one_address_cannot_take_every_connection(server_factory):
    server = server_factory(max_connections=20, max_client_connections=5, header_timeout=60.0)
    address = ("127.0.0.1", urlsplit(server.url).port)
    held = [socket.create_connection(address, source_address=(OTHER_CLIENT, 0)) for _ in range(5)]
    try:
        with socket.create_connection(address, source_address=(OTHER_CLIENT, 0)) as extra:
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"--max-client-connections" in answer, answer
        # everyone else is still answered, /healthz included
        assert requests.get(server.url + "/healthz", timeout=TIMEOUT).status_code == 200
        with requests.Session() as other:
            for _ in range(3):
                assert other.post(server.url + "/v0/sessions", json={"userId": "x"}, timeout=TIMEOUT).ok
    finally:
        for sock in held:
            sock.close()

    def served_again():
        try:
            return post(server, "/v0/sessions", {"userId": "u"}, source=OTHER_CLIENT)[0] == 200
        except OSError:
            return False

    wait_until(served_again, "the address is served again once its connections closed")


def test_the_command_line_takes_the_limits(tmp_path):
    from whylogs_songbird.server.cli import parse_args

    config = parse_args(
        ["--data-dir", str(tmp_path), "--max-open-slots", "7", "--session-rate", "5", "--session-burst", "6"]
        + ["--slot-rate", "0", "--slot-burst", "9", "--max-client-connections", "4", "--guest-sessions", "off"]
    )
    assert (config.max_open_slots, config.session_rate, config.session_burst) == (7, 5, 6)
    assert (config.slot_rate, config.slot_burst, config.max_client_connections) == (0, 9, 4)
    assert config.connection_limits.max_client_connections == 4 and not config.guest_sessions
    defaults = parse_args(["--data-dir", str(tmp_path), "--max-connections", "100"])
    assert defaults.guest_sessions and defaults.max_client_connections == 50
    assert defaults.max_open_slots >= 1000  # the largest batch the API takes
    with pytest.raises(ValueError, match="slot_burst"):
        ServerConfig(data_dir=tmp_path, slot_burst=0)


# -- --guest-sessions off -----------------------------------------------------------------------


def test_guest_sessions_off_refuses_guest_sessions_and_uploads(server_factory, tmp_path):
    data_dir = tmp_path / "shared"
    before = server_factory(data_dir=data_dir)
    session_id = new_session(before)
    slot = ask_slot(before, session_id)[2]
    old_base = before.url
    before.stop()

    server = server_factory(data_dir=data_dir, guest_sessions=False)
    status, _, body = post(server, "/v0/sessions", {"userId": "u"})
    assert status == 403 and "--guest-sessions off" in body["message"] and "API key" in body["message"]
    for status, _, body in (ask_slot(server, session_id), ask_references(server, session_id, 2)):
        assert status == 403 and "--guest-sessions off" in body["message"]
    url = slot["uploadUrl"].replace(old_base, server.url)  # a URL handed out before, still signed right
    r = requests.put(url, data=make_profile_bytes(), timeout=TIMEOUT)
    assert r.status_code == 403 and "--guest-sessions off" in r.json()["message"]
    assert server.store.list_profiles(session_id) == [] and server.store.session_count() == 1
    assert requests.get(server.url + "/healthz", timeout=TIMEOUT).ok
