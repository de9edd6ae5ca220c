"""The upload fast lane (server/routes/hot.py) answers exactly as the FastAPI routes do.

The fast lane takes only ``Content-Type: application/json``; FastAPI also reads ``application/*+json``,
so a slot request with such a type is answered by FastAPI itself. Each test sends the same request
both ways, over real HTTP, and compares the answers.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests

TS = 1_700_000_000_000


def raw(server, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
    """One request with exactly these headers (requests would add a Content-Type); status, JSON, headers."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else {}, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()


def both_ways(server, path: str, body: bytes) -> tuple[tuple, tuple]:
    """The answer of the fast lane and of FastAPI to the same body."""
    length = {"Content-Length": str(len(body))}
    fast = raw(server, "POST", path, body, {**length, "Content-Type": "application/json"})
    slow = raw(server, "POST", path, body, {**length, "Content-Type": "application/x-songbird+json"})
    return fast, slow


def new_session(server) -> str:
    return requests.post(f"{server.url}/v0/sessions", json={"userId": "hot"}, timeout=30).json()["id"]


def stats(server) -> dict[str, int]:
    return requests.get(f"{server.url}/_local/stats", timeout=30).json()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",  # no datasetTimestamp
        b'{"datasetTimestamp": "soon"}',
        b'{"datasetTimestamp": 1, "segmentTags": [{"key": 1}]}',
        b"not json",
        b"",
        b"[1, 2]",
    ],
)
def test_a_body_the_fast_lane_cannot_use_gets_fastapis_own_answer(server, body):
    session_id = new_session(server)
    fast, slow = both_ways(server, f"/v0/sessions/{session_id}/upload", body)
    assert fast[0] == slow[0] == 400
    assert fast[1] == slow[1] and fast[1]["message"]


def test_a_slot_from_the_fast_lane_is_the_slot_fastapi_makes(server):
    session_id = new_session(server)
    before = stats(server).get("upload", 0)
    fast, slow = both_ways(server, f"/v0/sessions/{session_id}/upload", json.dumps({"datasetTimestamp": TS}).encode())
    assert fast[0] == slow[0] == 200
    assert fast[1].keys() == slow[1].keys()
    assert fast[1]["observatoryUrl"] == slow[1]["observatoryUrl"]
    assert fast[1]["id"] != slow[1]["id"]
    assert fast[2]["content-type"] == slow[2]["content-type"] == "application/json"
    # the security headers of the outer middleware are on both answers
    assert fast[2].get("x-content-type-options") == slow[2].get("x-content-type-options") == "nosniff"
    assert stats(server)["upload"] == before + 2  # both were counted, once each
    for slot in (fast[1], slow[1]):
        assert requests.put(slot["uploadUrl"], data=b"junk", timeout=30).status_code == 400


def test_errors_of_the_handler_are_worded_alike(server):
    body = json.dumps({"datasetTimestamp": TS}).encode()
    fast, slow = both_ways(server, "/v0/sessions/session-doesnotexist/upload", body)
    assert fast[0] == slow[0] == 404
    assert fast[1] == slow[1] and "unknown to this server" in fast[1]["message"]


def test_a_json_body_over_the_limit_is_refused_on_the_fast_lane_too(server_factory):
    server = server_factory(max_json_bytes=200)
    session_id = new_session(server)
    big = json.dumps({"datasetTimestamp": TS, "segmentTags": [{"key": "k", "value": "v" * 500}]}).encode()
    fast, slow = both_ways(server, f"/v0/sessions/{session_id}/upload", big)
    assert fast[0] == slow[0] == 413
    assert fast[1] == slow[1] and "200 bytes" in fast[1]["message"]

    def chunks():  # no Content-Length: the limit is enforced while the body arrives
        yield big[:100]
        yield big[100:]

    streamed = requests.post(
        f"{server.url}/v0/sessions/{session_id}/upload",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413 and "200 bytes" in streamed.json()["message"]


def test_other_methods_and_paths_near_the_hot_ones_reach_fastapi(server):
    session_id = new_session(server)
    assert requests.get(f"{server.url}/v0/sessions/{session_id}/upload", timeout=30).status_code == 405
    put = requests.put(f"{server.url}/v0/uploads/log-x/extra", data=b"x", timeout=30)
    assert put.status_code == 404 and "no route" in put.json()["message"]
    post = requests.post(f"{server.url}/v0/uploads/log-x", data=b"x", timeout=30)
    assert post.status_code == 405


def test_put_answers_of_the_fast_lane(server):
    session_id = new_session(server)
    slot = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=30)
    url = slot.json()["uploadUrl"]
    before = stats(server).get("put", 0)
    tampered = requests.put(url.replace("signature=", "signature=0"), data=b"x", timeout=30)
    assert tampered.status_code == 403 and tampered.json()["message"]
    unsigned = requests.put(url.split("?")[0], data=b"x", timeout=30)
    assert unsigned.status_code == 403
    assert stats(server)["put"] == before + 2


def test_slots_and_small_puts_never_reach_fastapis_router(server):
    """The point of the fast lane: the two requests of an upload skip FastAPI's routing; others do not."""
    routed: list[str] = []
    router = server.app.router
    original = router.middleware_stack

    async def recording(scope, receive, send):
        routed.append(f"{scope.get('method')} {scope.get('path')}")
        await original(scope, receive, send)

    router.middleware_stack = recording
    try:
        session_id = new_session(server)
        slot = requests.post(f"{server.url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS}, timeout=30)
        assert slot.status_code == 200
        assert requests.put(slot.json()["uploadUrl"], data=b"junk", timeout=30).status_code == 400
        refused = raw(server, "POST", f"/v0/sessions/{session_id}/upload", b"{}", {"Content-Type": "application/json"})
        assert refused[0] == 400
    finally:
        router.middleware_stack = original
    assert routed == ["POST /v0/sessions", f"POST /v0/sessions/{session_id}/upload"]  # the last: FastAPI's 400
