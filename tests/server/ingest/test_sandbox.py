"""Nothing an upload holds runs in the server's process unchecked (issue 20): the crafted profile
that crashed the sketch library is refused or marked invalid, a profile that crashes or hangs its
sandbox process is counted in the store and marked invalid after a few tries, and restarting on
the same data never re-runs a crash loop. Real HTTP against real servers on both stores."""

from __future__ import annotations

import datetime
import time

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import STORAGE_NAMES, make_profile_bytes
from profile_crafting import huge_frequent_items_map
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.common import observatory_link
from whylogs_songbird.server.ingest import LEASE_MS, ingest_many
from whylogs_songbird.server.sandbox import TEST_FAULT_ENV, Sandbox, SandboxCrash, SandboxLimits, SandboxRefused
from whylogs_songbird.server.serving import open_store
from whylogs_songbird.server.storage.base import INGEST_MAX_TRIES
from whylogs_songbird.server.store import NewUpload, Store

both_stores = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)
# the servers here crash, count and limit their own sandbox's children
pytestmark = pytest.mark.own_sandbox

TIMEOUT = 30
TS = 1_700_000_000_000
#: A column name only the profiles the test-only fault hook should hit contain.
MARKER = "sandbox-fault-marker-7f3a"


def wait_for(predicate, what, timeout=90):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def new_session(server) -> str:
    return requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]


def new_slot(server, session_id, ts=TS) -> dict:
    body = {"datasetTimestamp": ts, "segmentTags": []}
    r = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def state(server, upload_id):
    return server.store.get_upload(upload_id).ingest_state


def an_upload_lands(server, session_id, ts) -> None:
    """A normal profile uploaded over HTTP is summarised and its page answers 200."""
    slot = new_slot(server, session_id, ts)
    assert requests.put(slot["uploadUrl"], data=make_profile_bytes(seed=ts % 97), timeout=TIMEOUT).status_code == 200
    requests.get(f"{server.url}/sessions/{session_id}", timeout=TIMEOUT)  # the team store learns presigned PUTs
    wait_for(lambda: server.store.get_upload(slot["id"]) is not None and state(server, slot["id"]) == "ready", "lands")
    assert requests.get(slot["observatoryUrl"], timeout=TIMEOUT).status_code == 200


def store_as_an_older_server_did(server, session_id, data: bytes, claims: int = 0) -> str:
    """With ``server`` stopped: ``data`` stored as a pending profile without any check (as a
    server before the sketch check stored it), its summary claimed ``claims`` times by servers
    that then died. Returns the upload id."""
    store = open_store(server.config)
    try:
        upload = store.create_upload(session_id, "batch", ttl_seconds=600, dataset_timestamp=TS + 1)
        store_profile_bytes(store, upload.id, data)
        for _ in range(claims):
            assert store.metadata.claim_ingest(lease_ms=-1)  # its lease already over: claimed again next time
        return upload.id
    finally:
        store.close()


def invalid_and_shown(server, session_id, upload_id, reason: str) -> None:
    """The profile is invalid with ``reason``; the session page marks it, its page says why (not a 5xx)."""
    upload = server.store.get_upload(upload_id)
    assert upload.ingest_state == "invalid" and reason in upload.ingest_error, upload.ingest_error
    listing = requests.get(f"{server.url}/sessions/{session_id}", timeout=TIMEOUT)
    assert listing.status_code == 200 and 'data-field="invalid"' in listing.text
    page = requests.get(observatory_link(server.url, session_id, [upload_id], []), timeout=TIMEOUT)
    assert page.status_code == 422 and reason.split(" (")[0][:40] in page.text


@both_stores
def test_the_crafted_profile_never_takes_the_server_down_and_restarts_are_clean(server_factory):
    server = server_factory()
    session_id = new_session(server)
    crafted = huge_frequent_items_map(make_profile_bytes(), "n")
    slot = new_slot(server, session_id)
    answer = requests.put(slot["uploadUrl"], data=crafted, timeout=TIMEOUT)
    if server.store.presigns:  # team store: the bytes went to S3; the server checks them when it learns them
        assert answer.status_code == 200
        requests.get(f"{server.url}/sessions/{session_id}", timeout=TIMEOUT)
        wait_for(lambda: server.store.get_upload(slot["id"]).stored, "learned")
        wait_for(lambda: state(server, slot["id"]) == "invalid", "marked invalid")
        invalid_and_shown(server, session_id, slot["id"], "lg_max_map_size = 64")
    else:
        assert answer.status_code == 400, answer.text
        message = answer.json()["message"]
        assert "column 'n', metric 'frequent_items/frequent_strings'" in message
        assert "lg_max_map_size = 64" in message and "nothing was stored" in message
    an_upload_lands(server, session_id, TS + 10)

    # the same bytes left pending by an older server: a start picks them up, and stays up
    server.stop()
    left = store_as_an_older_server_did(server, session_id, crafted)
    server.start()
    wait_for(lambda: state(server, left) == "invalid", "the pending crafted profile is marked invalid")
    invalid_and_shown(server, session_id, left, "lg_max_map_size = 64")
    an_upload_lands(server, session_id, TS + 20)

    server.stop()
    server.start()  # and again: nothing left to crash on
    assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
    assert state(server, left) == "invalid"
    an_upload_lands(server, session_id, TS + 30)


@both_stores
def test_a_profile_that_crashes_its_sandbox_is_counted_and_given_up_on(server_factory, monkeypatch):
    """A profile that passes every check but kills the sandbox child (forced by the test-only hook:
    no known sketch does so once checked) is tried INGEST_MAX_TRIES times, counted in the store
    across restarts, then shown invalid with what happened."""
    monkeypatch.setenv(TEST_FAULT_ENV, "crash:" + MARKER.encode().hex())
    doomed = why.log(pd.DataFrame({MARKER: [1, 2, 3]})).view().serialize()
    server = server_factory()
    session_id = new_session(server)
    slot = new_slot(server, session_id)
    assert requests.put(slot["uploadUrl"], data=doomed, timeout=TIMEOUT).status_code == 200
    requests.get(f"{server.url}/sessions/{session_id}", timeout=TIMEOUT)
    wait_for(lambda: server.store.get_upload(slot["id"]).stored, "stored")
    wait_for(lambda: state(server, slot["id"]) == "invalid", "given up on after its tries")
    upload = server.store.get_upload(slot["id"])
    assert upload.ingest_tries == INGEST_MAX_TRIES
    invalid_and_shown(server, session_id, slot["id"], f"summarising it failed {INGEST_MAX_TRIES} times")
    assert "crashed (SIGSEGV)" in upload.ingest_error
    an_upload_lands(server, session_id, TS + 10)

    # tries survive restarts: two claims by servers that died, so one more try is left
    server.stop()
    left = store_as_an_older_server_did(server, session_id, doomed, claims=INGEST_MAX_TRIES - 1)
    server.start()
    wait_for(lambda: state(server, left) == "invalid", "given up on after the one try left")
    assert server.store.get_upload(left).ingest_tries == INGEST_MAX_TRIES
    assert server.app.state.sandbox.started == 1, "one child, killed by the one try left"
    server.stop()
    server.start()
    an_upload_lands(server, session_id, TS + 20)
    assert server.store.get_upload(left).ingest_tries == INGEST_MAX_TRIES, "never tried again"


def test_a_profile_that_hangs_its_sandbox_is_killed_and_given_up_on(server_factory, monkeypatch):
    monkeypatch.setenv(TEST_FAULT_ENV, "hang:" + MARKER.encode().hex())
    server = server_factory(sandbox_cpu_seconds=1)  # killed after 2.5 s without an answer
    session_id = new_session(server)
    slot = new_slot(server, session_id)
    doomed = why.log(pd.DataFrame({MARKER: ["x"]})).view().serialize()
    assert requests.put(slot["uploadUrl"], data=doomed, timeout=TIMEOUT).status_code == 200
    an_upload_lands(server, session_id, TS + 10)  # answered while a child hangs
    wait_for(lambda: state(server, slot["id"]) == "invalid", "given up on")
    assert "did not answer within 2.5 s" in server.store.get_upload(slot["id"]).ingest_error


def test_the_sandbox_limits_memory_and_survives_its_children(monkeypatch):
    sandbox = Sandbox(SandboxLimits(memory_bytes=8 * 1024 * 1024))
    try:
        roomy = make_profile_bytes()
        for column in ("n", "x", "s"):  # maps of 2^18 slots pass the check: several MB each
            roomy = huge_frequent_items_map(roomy, column, lg=18)
        with pytest.raises(SandboxRefused, match="more memory"):
            sandbox.digest(roomy)
        assert sandbox.digest(make_profile_bytes()), "a fresh child takes the next profile"
        with pytest.raises(SandboxRefused, match="not a well-formed whylogs profile"):
            sandbox.digest(b"WHY1 junk")
        monkeypatch.setenv(TEST_FAULT_ENV, "crash:" + b"WHY1".hex())
        sandbox.close()  # children started from now on see the hook
        with pytest.raises(SandboxCrash, match="SIGSEGV"):
            sandbox.digest(make_profile_bytes())
    finally:
        sandbox.close()


def test_profiles_sent_together_get_the_answers_they_get_alone_and_a_crash_costs_only_its_own_try(
    tmp_path, monkeypatch
):
    """``digest_many``: a burst of profiles in one trip to one child, more bytes than a pipe holds,
    each answered as alone. Then ``ingest_many`` on the embedded store, where the child dies on the
    third profile of a batch while the server still writes the rest: only that profile's try
    counts; those answered before it keep their answers and those after it are summarised alone,
    no try counted against them."""
    good = [make_profile_bytes(seed=seed) for seed in range(3)]
    monkeypatch.setenv(TEST_FAULT_ENV, "crash:" + MARKER.encode().hex())
    doomed = why.log(pd.DataFrame({MARKER: [1, 2, 3]})).view().serialize()
    profile = why.log(pd.DataFrame({f"c{j}": [j] * 3 for j in range(80)})).profile()  # about 25 kB
    wide = []
    for day in range(1, 4):
        profile.set_dataset_timestamp(datetime.datetime(2024, 1, day, tzinfo=datetime.timezone.utc))
        wide.append(profile.view().serialize())
    sent = [good[0], b"WHY1 junk", doomed, *wide]
    assert sum(len(data) for data in sent[3:]) > 64 * 1024, "still being written when the child dies"
    store, sandbox = Store(tmp_path / "data"), Sandbox()
    try:
        alone = [sandbox.digest(data) for data in good]
        burst = [good[i % 3] for i in range(100)]  # several pipe buffers of requests
        assert sum(len(data) for data in burst) > 128 * 1024
        assert sandbox.digest_many(burst) == [alone[i % 3] for i in range(100)]
        assert sandbox.digest_many([]) == [] and sandbox.started == 1

        session_id = store.create_session("user").id
        slots = store.create_uploads(session_id, [NewUpload("reference")] * len(sent), ttl_seconds=900)
        for slot, data in zip(slots, sent):
            store_profile_bytes(store, slot.id, data)
        claimed = {upload.id: upload for upload in store.claim_ingest(lease_ms=LEASE_MS, limit=len(sent))}
        digests = ingest_many(store, [claimed[slot.id] for slot in slots], sandbox)
        assert digests[0] == alone[0] and digests[1:3] == [None, None] and all(digests[3:])
        states = [store.get_upload(slot.id) for slot in slots]
        assert [(u.ingest_state, u.ingest_tries) for u in states] == [
            ("ready", 0),
            ("invalid", 0),
            ("pending", 1),  # claimed again later: two tries left
            ("ready", 0),
            ("ready", 0),
            ("ready", 0),
        ]
        assert "not a well-formed whylogs profile" in states[1].ingest_error
        assert states[2].ingest_error == "the process summarising it crashed (SIGSEGV)"
        assert sandbox.started == 2, "the child it killed, and one for the profiles after it"
    finally:
        sandbox.close()
        store.close()


def test_a_sandbox_given_to_servers_reads_their_uploads_and_outlives_each(tmp_path):
    from whylogs_songbird.server import LocalServer
    from whylogs_songbird.server.app import sandbox_for
    from whylogs_songbird.server.config import ServerConfig

    given = sandbox_for(ServerConfig(ingest_concurrency=1, sandbox_cpu_seconds=7))
    assert (given.max_children, given.limits.cpu_seconds, given.limits.wall_seconds) == (2, 7, 17.5)
    try:
        for n in (1, 2):
            with LocalServer(tmp_path / f"given-{n}", sandbox=given) as server:
                assert server.app.state.sandbox is given
                an_upload_lands(server, new_session(server), TS + n)
            # the server stopped; the sandbox it was given keeps its children for the next one
            assert given._idle and all(child.process.poll() is None for child in given._idle)
        assert given.started == 1, "the second server's upload was read by the first one's child"
        with LocalServer(tmp_path / "own") as server:
            own = server.app.state.sandbox
            assert own is not given and own.max_children == ServerConfig().ingest_concurrency + 1
            an_upload_lands(server, new_session(server), TS + 3)
            children = list(own._idle)
        assert children and own._idle == [], "a server's own sandbox is closed with it"
        for child in children:
            assert child.process.wait(timeout=TIMEOUT) is not None
    finally:
        given.close()
