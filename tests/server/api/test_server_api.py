"""The local songbird server over real HTTP on loopback: every operation and every error path."""

import hashlib
import logging
import os
import stat
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import ANY_ORG_KEY, ORG_KEY, make_profile_bytes
from conftest import health as health_of
from loopback import wait_until
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from whylogs_songbird.models import HEALTH_TOKEN_FILE, HEALTH_TOKEN_HEADER
from whylogs_songbird.server import LocalServer, ServerConfig
from whylogs_songbird.server.serving import RedactQueryFilter
from whylogs_songbird.server.signing import UrlSigner, load_or_create_secret
from whylogs_songbird.server.store import ID_PATTERN

TS = 1_700_000_000_000
TIMEOUT = 10


# -- helpers ---------------------------------------------------------------------------------


def post(server, path, body=None, **kwargs):
    return requests.post(f"{server.url}{path}", json=body, timeout=TIMEOUT, **kwargs)


def new_session(server, user_id="user-1"):
    r = post(server, "/v0/sessions", {"userId": user_id})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def new_batch_upload(server, session_id, ts=TS, tags=()):
    body = {"datasetTimestamp": ts, "segmentTags": [{"key": k, "value": v} for k, v in tags]}
    r = post(server, f"/v0/sessions/{session_id}/upload", body)
    assert r.status_code == 200, r.text
    return r.json()


def new_reference(server, session_id, alias=None):
    body = {} if alias is None else {"alias": alias}
    r = post(server, f"/v0/sessions/{session_id}/reference", body)
    assert r.status_code == 200, r.text
    return r.json()


def put(url, data):
    return requests.put(url, data=data, timeout=TIMEOUT)


def link(server, session_id, timestamps=(), refs=()):
    body = {"batchProfileTimestamps": list(timestamps), "referenceProfileIds": list(refs)}
    return post(server, f"/v0/sessions/observatory-link/{session_id}", body)


def query(url):
    return parse_qs(urlsplit(url).query)


def message(response):
    body = response.json()
    assert set(body) == {"message"}, body
    return body["message"]


def stored_profiles(server, session_id):
    return server.store.list_profiles(session_id)


# -- happy paths -----------------------------------------------------------------------------


def test_health_and_stats(server):
    assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}, "strangers: ok only"
    wrong = requests.get(f"{server.url}/healthz", headers={HEALTH_TOKEN_HEADER: "0" * 64}, timeout=TIMEOUT)
    assert wrong.json() == {"status": "ok"}
    token_file = server.data_dir / HEALTH_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600, "only the server's user reads the token"
    health = health_of(server.url, server.data_dir)
    assert health["status"] == "ok" and health["service"] == "songbird" and health["pid"] == os.getpid()
    assert health["data_dir"] == str(server.data_dir) and health["sessions"] == 0
    assert isinstance(health["started_at"], int) and isinstance(health["version"], str)
    stats = requests.get(f"{server.url}/_local/stats", timeout=TIMEOUT).json()
    for op in ("create_session", "upload", "reference", "references", "observatory_link", "get_session", "claim"):
        assert stats[op] == 0
    assert stats["put"] == 0


def test_create_session_and_get_session(server):
    session_id = new_session(server, user_id="0b9f-uuid")
    assert ID_PATTERN.match(session_id) and session_id.startswith("session-")
    r = requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": ANY_ORG_KEY}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {
        "session": {"sessionId": session_id, "orgId": "guest", "modelId": "model-1", "userId": "0b9f-uuid"}
    }
    # a key of an org the session is not in sees the session, not who uploaded it
    r = requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["session"]["userId"] == ""
    assert "0b9f-uuid" not in r.text


def test_batch_upload_put_link_and_page(server):
    session_id = new_session(server)
    data = make_profile_bytes(20)
    up = new_batch_upload(server, session_id, tags=[("city", "São Paulo"), ("tier", "a&b")])
    assert up["id"].startswith("log-") and ID_PATTERN.match(up["id"])
    assert up["datasetId"] == "model-1" and isinstance(up["uploadTimestamp"], int)
    assert up["uploadUrl"].startswith(f"{server.url}/v0/uploads/{up['id']}?")
    obs = urlsplit(up["observatoryUrl"])
    assert f"{obs.scheme}://{obs.netloc}{obs.path}" == f"{server.url}/resources/model-1/profiles"
    assert query(up["observatoryUrl"]) == {
        "profile": [str(TS)],
        "sessionToken": [session_id],
        "segment": ["city=São Paulo,tier=a&b"],
    }

    r = put(up["uploadUrl"], data)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    [profile] = stored_profiles(server, session_id)
    assert profile.id == up["id"] and profile.kind == "batch" and profile.dataset_timestamp == TS
    assert profile.segment_tags == (("city", "São Paulo"), ("tier", "a&b"))
    assert server.store.read_profile_bytes(profile) == data
    assert profile.size == len(data) and profile.sha256 == hashlib.sha256(data).hexdigest()

    r = link(server, session_id, timestamps=[TS])
    assert r.status_code == 200, r.text
    assert query(r.json()["observatoryUrl"]) == {"profile": [str(TS)], "sessionToken": [session_id]}
    assert r.json()["individualObservatoryUrls"] == [r.json()["observatoryUrl"]]

    page = requests.get(up["observatoryUrl"], timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "city=São Paulo" in page.text and "tier=a&amp;b" in page.text and str(len(data)) in page.text


def test_reference_upload_with_and_without_alias(server):
    session_id = new_session(server)
    named = new_reference(server, session_id, alias="training")
    unnamed = new_reference(server, session_id)
    for ref in (named, unnamed):
        assert ref["id"].startswith("ref-") and ID_PATTERN.match(ref["id"])
        assert ref["modelId"] == "model-1"
        assert query(ref["observatoryUrl"]) == {"profile": [ref["id"]], "sessionToken": [session_id]}
        assert put(ref["uploadUrl"], make_profile_bytes()).status_code == 200
    assert named["alias"] == "training"
    assert unnamed["alias"] == unnamed["id"]  # no alias given: named after its id
    refs = server.store.list_profiles(session_id, kind="reference")
    assert [r.id for r in refs] == [named["id"], unnamed["id"]]


def test_batch_references_combined_link_shows_first_three(server):
    session_id = new_session(server)
    aliases = ["a", "b", "c", "d"]
    r = post(server, f"/v0/sessions/{session_id}/references", {"references": [{"alias": a} for a in aliases]})
    assert r.status_code == 200, r.text
    refs = r.json()["references"]
    assert [ref["alias"] for ref in refs] == aliases
    assert len({ref["id"] for ref in refs}) == 4
    assert query(r.json()["observatoryUrl"]) == {
        "profile": [ref["id"] for ref in refs[:3]],
        "sessionToken": [session_id],
    }
    r = post(server, f"/v0/sessions/{session_id}/references", {"references": []})
    assert r.status_code == 400 and "references" in message(r) and "at least 1 item" in message(r)


def test_link_order_and_individual_urls(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id, ts=TS + 1)
    assert put(up["uploadUrl"], make_profile_bytes()).status_code == 200
    refs = [new_reference(server, session_id, alias=a) for a in ("r1", "r2")]
    for ref in refs:
        assert put(ref["uploadUrl"], make_profile_bytes(seed=3)).status_code == 200
    r = link(server, session_id, timestamps=[TS + 1], refs=[refs[1]["id"], refs[0]["id"]])
    assert r.status_code == 200, r.text
    expected = [str(TS + 1), refs[1]["id"], refs[0]["id"]]
    # The combined link leads with the references (the baseline the observatory compares against).
    combined = [refs[1]["id"], refs[0]["id"], str(TS + 1)]
    assert query(r.json()["observatoryUrl"]) == {"profile": combined, "sessionToken": [session_id]}
    individual = r.json()["individualObservatoryUrls"]
    assert [query(u)["profile"] for u in individual] == [[p] for p in expected]
    page = requests.get(r.json()["observatoryUrl"], timeout=TIMEOUT)
    assert page.status_code == 200 and "r1" in page.text and "r2" in page.text


def test_link_needs_one_to_three_profiles(server):
    session_id = new_session(server)
    refs = []
    for alias in ("a", "b", "c", "d"):
        ref = new_reference(server, session_id, alias=alias)
        assert put(ref["uploadUrl"], make_profile_bytes()).status_code == 200
        refs.append(ref["id"])
    r = link(server, session_id, refs=refs)
    assert r.status_code == 400 and "3 profiles" in message(r)
    r = link(server, session_id)
    assert r.status_code == 400 and "3 profiles" in message(r)
    assert link(server, session_id, refs=refs[:3]).status_code == 200


def test_link_unknown_profiles_404(server):
    session_id = new_session(server)
    other = new_session(server)
    other_ref = new_reference(server, other, alias="theirs")
    assert put(other_ref["uploadUrl"], make_profile_bytes()).status_code == 200
    pending = new_reference(server, session_id, alias="not-put-yet")

    r = link(server, session_id, timestamps=[TS])
    assert r.status_code == 404 and str(TS) in message(r)
    assert link(server, session_id, refs=[other_ref["id"]]).status_code == 404  # another session's reference
    assert link(server, session_id, refs=[pending["id"]]).status_code == 404  # created but never PUT
    assert link(server, session_id, refs=["../../etc/passwd"]).status_code == 404
    assert link(server, other, refs=[other_ref["id"]]).status_code == 200


def test_unknown_fields_are_ignored(server):
    r = post(server, "/v0/sessions", {"userId": "u", "extra": 1, "session_id": "x"})
    assert r.status_code == 200
    session_id = r.json()["id"]
    body = {"datasetTimestamp": TS, "segmentTags": [], "dataset": "model-1", "region": "us-west-2", "x": {"y": 1}}
    assert post(server, f"/v0/sessions/{session_id}/upload", body).status_code == 200
    body = {"alias": "a", "datasetTimestamp": 0, "whatever": True}
    assert post(server, f"/v0/sessions/{session_id}/reference", body).status_code == 200
    body = {"session_id": session_id, "references": [{"alias": "test", "datasetTimestamp": 0, "z": 1}]}
    assert post(server, f"/v0/sessions/{session_id}/references", body).status_code == 200
    up = new_batch_upload(server, session_id)
    assert put(up["uploadUrl"], make_profile_bytes()).status_code == 200
    body = {"batchProfileTimestamps": [TS], "referenceProfileIds": [], "orgId": "x"}
    assert post(server, f"/v0/sessions/observatory-link/{session_id}", body).status_code == 200


def test_stats_count_calls_per_operation(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    put(up["uploadUrl"], make_profile_bytes())
    new_reference(server, session_id)
    post(server, f"/v0/sessions/{session_id}/references", {"references": [{"alias": "x"}]})
    post(server, f"/v0/sessions/{session_id}/upload", {"bad": 1})  # invalid calls count too
    link(server, session_id, timestamps=[TS])
    stats = requests.get(f"{server.url}/_local/stats", timeout=TIMEOUT).json()
    assert stats["create_session"] == 1 and stats["upload"] == 2 and stats["put"] == 1
    assert stats["reference"] == 1 and stats["references"] == 1 and stats["observatory_link"] == 1
    assert server.stats() == stats


# -- sessions: unknown, claimed, API keys ------------------------------------------------------


@pytest.mark.parametrize("session_id", ["session-" + "A" * 24, "not-a-session", "ref-" + "A" * 24])
def test_unknown_session_is_404_everywhere(server, session_id):
    calls = [
        post(server, f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS, "segmentTags": []}),
        post(server, f"/v0/sessions/{session_id}/reference", {"alias": "a"}),
        post(server, f"/v0/sessions/{session_id}/references", {"references": [{"alias": "a"}]}),
        link(server, session_id, timestamps=[TS]),
        requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT),
        post(server, f"/v0/sessions/{session_id}/claim?org_id=org-test", headers={"X-API-Key": ORG_KEY}),
    ]
    for r in calls:
        assert r.status_code == 404, (r.request.url, r.text)
        assert message(r)


def test_api_key_missing_or_wrong_is_401(server):
    session_id = new_session(server)
    url = f"{server.url}/v0/sessions/{session_id}"
    claim = f"{url}/claim?org_id=org-test"
    for headers in ({}, {"X-API-Key": "wrong.key"}, {"X-API-Key": ORG_KEY + "x"}):
        r = requests.get(url, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401 and "X-API-Key" in message(r)
        r = requests.post(claim, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401
        assert ORG_KEY not in r.text
    # The org-bound key also works without its ":org" suffix.
    assert requests.get(url, headers={"X-API-Key": "testkey.secret"}, timeout=TIMEOUT).status_code == 200
    assert requests.get(url, headers={"X-API-Key": ANY_ORG_KEY}, timeout=TIMEOUT).status_code == 200


def test_server_without_keys_explains_401(server_factory):
    server = server_factory(api_keys=[])
    session_id = new_session(server)
    r = requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": "a.b"}, timeout=TIMEOUT)
    assert r.status_code == 401 and "--api-key" in message(r)


def test_api_keys_from_environment(server_factory, monkeypatch):
    monkeypatch.setenv("SONGBIRD_SERVER_API_KEYS", "envkey.one:org-env, envkey.two")
    server = server_factory(api_keys=[])
    session_id = new_session(server)
    url = f"{server.url}/v0/sessions/{session_id}"
    assert requests.get(url, headers={"X-API-Key": "envkey.two"}, timeout=TIMEOUT).status_code == 200
    r = requests.post(f"{url}/claim?org_id=org-env", headers={"X-API-Key": "envkey.one:org-env"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert "envkey" not in repr(server.config)


def test_claim_then_session_takes_no_more_data(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    assert put(up["uploadUrl"], make_profile_bytes()).status_code == 200
    late = new_reference(server, session_id, alias="late")

    claim = f"/v0/sessions/{session_id}/claim?org_id=org-test"
    r = post(server, claim, headers={"X-API-Key": ORG_KEY})
    assert r.status_code == 200 and r.json() == {}
    r = requests.get(f"{server.url}/v0/sessions/{session_id}", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)
    assert r.json()["session"]["orgId"] == "org-test"

    for r in (
        post(server, f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS, "segmentTags": []}),
        post(server, f"/v0/sessions/{session_id}/reference", {"alias": "x"}),
        post(server, f"/v0/sessions/{session_id}/references", {"references": [{"alias": "x"}]}),
        link(server, session_id, timestamps=[TS]),
        put(late["uploadUrl"], make_profile_bytes()),
    ):
        assert r.status_code == 404, r.text
        assert "claimed" in message(r) and "new session" in message(r)

    assert post(server, claim, headers={"X-API-Key": ORG_KEY}).status_code == 200  # retry is harmless
    r = post(server, f"/v0/sessions/{session_id}/claim?org_id=org-other", headers={"X-API-Key": ANY_ORG_KEY})
    assert r.status_code == 404 and "unknown" in message(r) and "claimed" in message(r)


def test_claim_into_another_org_is_403(server):
    session_id = new_session(server)
    r = post(server, f"/v0/sessions/{session_id}/claim?org_id=org-other", headers={"X-API-Key": ORG_KEY})
    assert r.status_code == 403 and "org-test" in message(r)
    assert server.store.get_session(session_id).claimed_at is None
    r = post(server, f"/v0/sessions/{session_id}/claim?org_id=org-other", headers={"X-API-Key": ANY_ORG_KEY})
    assert r.status_code == 200
    assert server.store.get_session(session_id).claimed_org == "org-other"


def test_claim_without_org_id_is_400(server):
    session_id = new_session(server)
    r = post(server, f"/v0/sessions/{session_id}/claim", headers={"X-API-Key": ORG_KEY})
    assert r.status_code == 400 and "org_id" in message(r)


# -- presigned PUTs ----------------------------------------------------------------------------


def test_put_bad_missing_or_tampered_signature_is_403(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    url = up["uploadUrl"]
    base, q = url.split("?")
    params = query(url)
    expires, signature = params["expires"][0], params["signature"][0]
    bad_sig = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in (
        base,
        f"{base}?expires={expires}",
        f"{base}?signature={signature}",
        f"{base}?expires={expires}&signature={bad_sig}",
        f"{base}?expires={int(expires) + 3600}&signature={signature}",  # tampered expiry
        f"{base}?expires=abc&signature={signature}",
    ):
        r = put(bad, make_profile_bytes())
        assert r.status_code == 403, (bad, r.text)
        assert signature not in r.text
    # the signature of one upload does not open another
    other = new_batch_upload(server, session_id)
    other_base = other["uploadUrl"].split("?")[0]
    assert put(f"{other_base}?{q}", make_profile_bytes()).status_code == 403
    assert stored_profiles(server, session_id) == []


def test_put_expired_url_is_403(server_factory):
    server = server_factory(url_ttl_seconds=1)
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    expires = int(parse_qs(urlsplit(up["uploadUrl"]).query)["expires"][0])
    assert wait_until(lambda: time.time() > expires, timeout=5), "the URL's expiry time passed"
    r = put(up["uploadUrl"], make_profile_bytes())
    assert r.status_code == 403
    assert "expired" in message(r) and "new one" in message(r)
    assert stored_profiles(server, session_id) == []


def test_put_expired_but_correctly_signed_url_is_403(server):
    # An expiry in the past signed with the server's own secret: only the expiry is wrong.
    session_id = new_session(server)
    up = new_reference(server, session_id)
    signer = UrlSigner(load_or_create_secret(server.data_dir))
    url = signer.upload_url(server.url, up["id"], int(time.time()) - 5)
    r = put(url, make_profile_bytes())
    assert r.status_code == 403 and "expired" in message(r)


def test_put_unknown_upload_is_404(server):
    signer = UrlSigner(load_or_create_secret(server.data_dir))
    ghost = "log-" + "Z" * 24
    r = put(signer.upload_url(server.url, ghost, int(time.time()) + 60), make_profile_bytes())
    assert r.status_code == 404 and message(r)
    r = requests.put(f"{server.url}/v0/uploads/..%2F..%2Fsecret.key?expires=1&signature=00", data=b"x", timeout=10)
    assert r.status_code == 404
    r = put(f"{server.url}/v0/uploads/session-{'A' * 24}?expires=1&signature=00", b"x")
    assert r.status_code == 404


def test_put_body_that_is_not_a_profile_is_400_and_nothing_is_stored(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    for body in (b"definitely not a profile", make_profile_bytes()[:40], b""):
        r = put(up["uploadUrl"], body)
        assert r.status_code == 400, r.text
        assert "nothing was stored" in message(r)
    assert stored_profiles(server, session_id) == []
    assert server.store.get_upload(up["id"]).stored_at is None
    assert os.listdir(server.data_dir / "tmp") == []


def test_put_oversized_body_is_413(server_factory):
    server = server_factory(max_upload_bytes=2000)
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    big = make_profile_bytes(500)
    assert len(big) > 2000
    r = put(up["uploadUrl"], big)  # Content-Length says it all
    assert r.status_code == 413 and "2000 bytes" in message(r)

    def chunks():  # no Content-Length: counted while streaming
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = put(up["uploadUrl"], chunks())
    assert r.status_code == 413 and "2000 bytes" in message(r)
    assert stored_profiles(server, session_id) == []
    assert os.listdir(server.data_dir / "tmp") == []
    small = make_profile_bytes(2)
    assert len(small) <= 2000 and put(up["uploadUrl"], small).status_code == 200


def test_streamed_put_without_content_length_is_stored(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    data = make_profile_bytes(300)
    r = put(up["uploadUrl"], (data[i : i + 100] for i in range(0, len(data), 100)))
    assert r.status_code == 200
    [profile] = stored_profiles(server, session_id)
    assert server.store.read_profile_bytes(profile) == data


def test_json_body_over_limit_is_413(server_factory):
    server = server_factory(max_json_bytes=200)
    r = post(server, "/v0/sessions", {"userId": "u" * 500})
    assert r.status_code == 413 and "200 bytes" in message(r)
    assert post(server, "/v0/sessions", {"userId": "u"}).status_code == 200


def test_repeated_put_replaces_bytes(server):
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    first, second = make_profile_bytes(5), make_profile_bytes(50, seed=7)
    assert put(up["uploadUrl"], first).status_code == 200
    assert put(up["uploadUrl"], second).status_code == 200
    [profile] = stored_profiles(server, session_id)
    assert server.store.read_profile_bytes(profile) == second
    assert profile.sha256 == hashlib.sha256(second).hexdigest() and profile.size == len(second)


def test_parallel_puts_all_land(server):
    session_id = new_session(server)
    uploads = [new_batch_upload(server, session_id, ts=TS + i) for i in range(8)]
    payloads = [make_profile_bytes(10 + i, seed=i) for i in range(8)]
    results: list[int] = [0] * 8

    def send(i: int) -> None:
        results[i] = put(uploads[i]["uploadUrl"], payloads[i]).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    by_id = {p.id: p for p in stored_profiles(server, session_id)}
    for up, data in zip(uploads, payloads, strict=True):
        assert server.store.read_profile_bytes(by_id[up["id"]]) == data


# -- validation --------------------------------------------------------------------------------


def test_bad_input_is_400_with_a_readable_message(server):
    session_id = new_session(server)
    upload = f"{server.url}/v0/sessions/{session_id}/upload"
    cases = [
        requests.post(upload, json={}, timeout=TIMEOUT),
        requests.post(upload, json={"datasetTimestamp": "yesterday"}, timeout=TIMEOUT),
        requests.post(upload, json={"datasetTimestamp": TS, "segmentTags": [{"key": "a"}]}, timeout=TIMEOUT),
        requests.post(upload, json={"datasetTimestamp": 10**30}, timeout=TIMEOUT),
        requests.post(upload, json=[1, 2], timeout=TIMEOUT),
        requests.post(upload, data="{not json", headers={"Content-Type": "application/json"}, timeout=TIMEOUT),
        requests.post(upload, data='{"datasetTimestamp": 1}', timeout=TIMEOUT),  # no Content-Type
        requests.post(
            upload,
            data='{"datasetTimestamp": 1, "segmentTags": [{"key": "\\ud800", "value": "v"}]}',
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT,
        ),
        requests.post(f"{server.url}/v0/sessions", json={"userId": None}, timeout=TIMEOUT),
        requests.post(f"{server.url}/v0/sessions", timeout=TIMEOUT),
    ]
    for r in cases:
        assert r.status_code == 400, (r.request.body, r.text)
        assert len(message(r)) > 20
    assert "datasetTimestamp" in message(cases[0])
    assert "not valid JSON" in message(cases[5])
    assert "Content-Type" in message(cases[6])


LONE_SURROGATE_MESSAGE = "The request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text."


def test_lone_surrogates_are_refused_in_every_text_field(server):
    session_id = new_session(server)
    bodies = [
        ("/v0/sessions", '{"userId": "\\udc80"}'),
        (f"/v0/sessions/{session_id}/reference", '{"alias": "a\\ud800b"}'),
        (f"/v0/sessions/{session_id}/reference", '{"alias": "ok", "region": "\\udfff"}'),
        (f"/v0/sessions/{session_id}/references", '{"references": [{"alias": "ok"}, {"alias": "\\udfff"}]}'),
        (
            f"/v0/sessions/{session_id}/upload",
            '{"datasetTimestamp": 1, "segmentTags": [{"key": "k", "value": "\\ud800"}]}',
        ),
        (f"/v0/sessions/observatory-link/{session_id}", '{"referenceProfileIds": ["ref-\\ud800"]}'),
    ]
    for path, body in bodies:
        r = requests.post(
            f"{server.url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
        )
        assert r.status_code == 400 and message(r) == LONE_SURROGATE_MESSAGE, (path, r.status_code, r.text)
    assert server.store.list_profiles(session_id) == [] and len(server.store.recent_sessions()) == 1
    # valid text outside the Basic Multilingual Plane (a surrogate pair in JSON) is fine
    assert new_reference(server, session_id, alias="emoji \U0001f426 and \\ud83d")["alias"].startswith("emoji")


def test_links_and_segment_labels_match_a_hand_built_url(server):
    session_id = new_session(server)
    tags = [("city", "a&b/?#=,x"), ("k", "v v")]
    up = new_batch_upload(server, session_id, tags=tags)
    # built by hand: every value percent-encoded, the segment as key=value pairs joined by commas
    # (a value holding , or = is quoted, so two different segments never share a label)
    expected = (
        f"{server.url}/resources/model-1/profiles?profile={TS}&sessionToken={session_id}"
        "&segment=city%3D%22a%26b%2F%3F%23%3D%2Cx%22%2Ck%3Dv+v"
    )
    assert up["observatoryUrl"] == expected
    assert parse_qs(urlsplit(up["observatoryUrl"]).query)["segment"] == ['city="a&b/?#=,x",k=v v']
    assert requests.put(up["uploadUrl"], data=make_profile_bytes(), timeout=TIMEOUT).status_code == 200
    assert requests.get(up["observatoryUrl"], timeout=TIMEOUT).status_code == 200


def test_error_answers_of_routes_and_of_faults_have_one_shape(server_factory):
    """A route's error and an injected fault are both ``{"message": ...}`` JSON, as the contract says."""
    plain = server_factory()
    faulty = server_factory(fault_rate=1.0, fault_seed=1)
    answers = [
        requests.post(
            f"{plain.url}/v0/sessions/session-{'x' * 24}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT
        ),
        requests.post(
            f"{plain.url}/v0/sessions", data="{", headers={"Content-Type": "application/json"}, timeout=TIMEOUT
        ),
    ]
    for _ in range(20):  # some faults drop the connection instead of answering
        try:
            answers.append(requests.post(f"{faulty.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT))
        except requests.ConnectionError:
            continue
    assert len(answers) > 5
    for r in answers:
        assert r.status_code >= 400 and r.headers["content-type"] == "application/json", (r.status_code, r.text)
        body = r.json()
        assert list(body) == ["message"] and isinstance(body["message"], str) and body["message"], body


def test_unknown_route_and_method_answer_json(server):
    r = requests.get(f"{server.url}/v0/nope", timeout=TIMEOUT)
    assert r.status_code == 404 and "no route" in message(r)
    r = requests.delete(f"{server.url}/v0/sessions", timeout=TIMEOUT)
    assert r.status_code == 405 and message(r)


# -- observatory listing -----------------------------------------------------------------------


def test_observatory_page_errors_and_escaping(server):
    session_id = new_session(server)
    ref = new_reference(server, session_id, alias="<script>alert(1)</script>")
    assert put(ref["uploadUrl"], make_profile_bytes()).status_code == 200
    page_url = f"{server.url}/resources/model-1/profiles"

    def get(params):
        return requests.get(page_url, params=params, timeout=TIMEOUT)

    r = get({"profile": ref["id"], "sessionToken": session_id})
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
    assert get({"profile": ref["id"], "sessionToken": "session-" + "B" * 24}).status_code == 404
    assert get({"profile": ref["id"]}).status_code == 404
    assert get({"profile": "ref-" + "C" * 24, "sessionToken": session_id}).status_code == 404
    assert get({"profile": str(TS), "sessionToken": session_id}).status_code == 404
    assert get({"profile": [ref["id"]] * 4, "sessionToken": session_id}).status_code == 400
    r = requests.get(f"{server.url}/resources/model-2/profiles", params={"profile": ref["id"]}, timeout=TIMEOUT)
    assert r.status_code == 404


# -- configuration and persistence -------------------------------------------------------------


def test_restart_keeps_data_and_old_upload_urls_still_verify(server_factory, tmp_path):
    data_dir = tmp_path / "persistent"
    first = server_factory(data_dir=data_dir)
    session_id = new_session(first)
    up = new_batch_upload(first, session_id, tags=[("k", "v")])
    data = make_profile_bytes(12)
    assert put(up["uploadUrl"], data).status_code == 200
    pending = new_reference(first, session_id, alias="after-restart")
    old_url = first.url
    first.stop()

    second = server_factory(data_dir=data_dir)
    r = requests.get(f"{second.url}/v0/sessions/{session_id}", headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)
    assert r.status_code == 200
    [profile] = stored_profiles(second, session_id)
    assert second.store.read_profile_bytes(profile) == data and profile.segment_tags == (("k", "v"),)
    assert link(second, session_id, timestamps=[TS]).status_code == 200
    # The old URL names the old port; its path and signature still verify on the new server.
    moved = pending["uploadUrl"].replace(old_url, second.url)
    assert put(moved, make_profile_bytes(3)).status_code == 200
    assert link(second, session_id, timestamps=[TS], refs=[pending["id"]]).status_code == 200


def test_secret_key_is_private_and_stable(tmp_path):
    secret = load_or_create_secret(tmp_path)
    assert len(secret) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == secret
    assert "secret" not in repr(UrlSigner(secret)).replace("<secret>", "")


def test_public_url_is_used_in_links(server_factory):
    server = server_factory(public_url="https://songbird.example.test/")
    session_id = new_session(server)
    up = new_batch_upload(server, session_id)
    assert up["uploadUrl"].startswith("https://songbird.example.test/v0/uploads/")
    assert up["observatoryUrl"].startswith("https://songbird.example.test/resources/model-1/profiles?")


def test_request_hooks_can_answer_instead_of_the_app(server_factory):
    async def fail_uploads(request: Request) -> Response | None:
        if request.url.path.endswith("/upload"):
            return JSONResponse({"message": "injected fault"}, status_code=503)
        return None

    server = server_factory(request_hooks=[fail_uploads], latency_ms=1)
    session_id = new_session(server)
    r = post(server, f"/v0/sessions/{session_id}/upload", {"datasetTimestamp": TS, "segmentTags": []})
    assert r.status_code == 503 and message(r) == "injected fault"


def test_config_validation():
    with pytest.raises(ValueError):
        ServerConfig(public_url="ftp://x")
    with pytest.raises(ValueError):
        ServerConfig(url_ttl_seconds=-1)
    with pytest.raises(ValueError):
        LocalServer(host="0.0.0.0")


def test_store_refuses_ids_it_did_not_make(server):
    store = server.store
    assert store.get_session("../../etc") is None
    assert store.get_upload("log-../../../secret.key") is None
    assert store.resolve_profile("session-" + "A" * 24, "../x") == []
    with pytest.raises(ValueError):
        store.create_upload("session-../../x", "batch", ttl_seconds=1, dataset_timestamp=1)


def test_access_log_filter_redacts_query_strings():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "PUT", "/v0/uploads/log-x?expires=1&signature=abc", "1.1", 200), None,
    )  # fmt: skip
    assert RedactQueryFilter().filter(record)
    assert "signature" not in record.getMessage() and "/v0/uploads/log-x?<redacted>" in record.getMessage()


def test_local_server_restarts_and_cleans_its_temp_dir():
    server = LocalServer()
    with server:
        data_dir = server.data_dir
        assert data_dir.exists()
        assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200
    assert not data_dir.exists()
    with pytest.raises(RuntimeError):
        server.store  # noqa: B018
