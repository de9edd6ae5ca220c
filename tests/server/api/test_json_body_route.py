"""The upload-slot route's quick path (``JsonBodyRoute`` in server/routes/deps.py), over real HTTP.

A request with ``Content-Type: application/json`` and a body the model accepts is answered without
FastAPI's parameter solving; any other request goes through FastAPI's own handler. The same body
sent both ways (``application/json`` and ``application/json; charset=utf-8``, which only FastAPI's
handler takes) gets the same answer and is counted once either way. On the quick path, a slot is
made on the event loop when the embedded store is free, in a worker thread when it is not.
"""

from __future__ import annotations

import asyncio
import threading

import fastapi.routing
import requests

TIMEOUT = 10
QUICK = "application/json"
FASTAPI = "application/json; charset=utf-8"

#: Bodies, and which of the two requests of each FastAPI's parameter solving sees: a valid body
#: only the FastAPI path's; an invalid one both (the quick path hands it on); bad JSON none (FastAPI
#: refuses it before solving).
BODIES = [
    (b'{"datasetTimestamp": 1700000000000}', [FASTAPI]),
    (b'{"datasetTimestamp": 1700000000000, "segmentTags": [{"key": "k", "value": "v"}], "extra": 1}', [FASTAPI]),
    (b'{"datasetTimestamp": "soon"}', [QUICK, FASTAPI]),
    (b'{"segmentTags": []}', [QUICK, FASTAPI]),
    (b"[1, 2]", [QUICK, FASTAPI]),
    (b"", [QUICK, FASTAPI]),
    (b'{"datasetTimestamp": 1700000000000', []),
    # a lone surrogate: valid for the model, refused by the route itself (400)
    (b'{"datasetTimestamp": 1700000000000, "segmentTags": [{"key": "\\ud800", "value": "v"}]}', [FASTAPI]),
]


def _post(url: str, session_id: str, body: bytes, content_type: str | None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{url}/v0/sessions/{session_id}/upload", data=body, headers=headers, timeout=TIMEOUT)


def _comparable(answer: requests.Response) -> tuple[int, object]:
    """The status and body, less what differs between two slots (their ids, URLs and times)."""
    body = answer.json()
    if answer.status_code == 200:
        body = sorted(body)
    return answer.status_code, body


def test_the_quick_path_answers_and_counts_as_fastapi_does_and_is_taken(server, monkeypatch):
    solved: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def solving(*args, **kwargs):  # FastAPI's own, noted
        solved.append(kwargs["request"].headers.get("content-type"))
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", solving)  # the server runs in this process
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    stats = f"{server.url}/_local/stats"
    counted_before = requests.get(stats, timeout=TIMEOUT).json()["upload"]
    for body, solving_seen in BODIES:
        solved.clear()
        quick, full = _post(server.url, session_id, body, QUICK), _post(server.url, session_id, body, FASTAPI)
        assert _comparable(quick) == _comparable(full), body
        assert quick.headers["content-type"] == full.headers["content-type"] == "application/json"
        assert solved == solving_seen, body
    # every call is counted, either way, but bad JSON (FastAPI refuses it before counting)
    assert requests.get(stats, timeout=TIMEOUT).json()["upload"] == counted_before + 2 * (len(BODIES) - 1)
    slot = _post(server.url, session_id, BODIES[0][0], QUICK).json()
    assert slot["uploadUrl"].startswith(f"{server.url}/v0/uploads/log-")
    gone = _post(server.url, "session-" + "0" * 32, BODIES[0][0], QUICK)
    assert gone.status_code == 404 and "start a new session" in gone.json()["message"]


def _where_slots_are_made(server, monkeypatch) -> list[str]:
    """Notes, for each upload slot the server makes, whether it was made on the event loop or in a worker thread."""
    where: list[str] = []
    create = server.store.create_uploads

    def creating(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            where.append("loop")
        except RuntimeError:
            where.append("thread")
        return create(*args, **kwargs)

    monkeypatch.setattr(server.store, "create_uploads", creating)  # the server runs in this process
    return where


def test_a_slot_is_made_on_the_loop_when_the_store_is_free_and_in_a_thread_when_it_is_not(server, monkeypatch):
    session_id = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    where = _where_slots_are_made(server, monkeypatch)
    assert _post(server.url, session_id, BODIES[0][0], QUICK).status_code == 200
    assert where == ["loop"]  # the embedded store was free: no hop to a worker thread

    counted = threading.Event()  # set once the route counted the request, right before it looks at the store
    count = server.store.count
    monkeypatch.setattr(server.store, "count", lambda operation: (count(operation), counted.set()))
    answers: list[requests.Response] = []
    with server.store.free_turn() as free:  # this test's thread holds the store
        assert free
        asking = threading.Thread(target=lambda: answers.append(_post(server.url, session_id, BODIES[0][0], QUICK)))
        asking.start()
        assert counted.wait(TIMEOUT)
        # the slot waits for the store in a worker thread; the event loop does not wait with it
        assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT).ok
        assert not answers
    asking.join(TIMEOUT)
    assert [answer.status_code for answer in answers] == [200]
    assert answers[0].json()["uploadUrl"].startswith(f"{server.url}/v0/uploads/log-")
    assert where == ["loop", "thread"]
