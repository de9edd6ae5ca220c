"""The upload-slot route's quick path (``JsonBodyRoute`` in server/routes/deps.py), over real HTTP.

A request with ``Content-Type: application/json`` and a body the model accepts is answered without
FastAPI's parameter solving; any other request goes through FastAPI's own handler. The same body
sent both ways (``application/json`` and ``application/json; charset=utf-8``, which only FastAPI's
handler takes) gets the same answer and is counted once either way.
"""

from __future__ import annotations

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
