"""A claimed session is gone from every guest route, on both stores.

The routes are enumerated from the app's route table, so a route added later is walked too: a test
fails until the new route is either given a walk here or said not to be session-scoped. Each walk
runs on a live session first (the request must succeed and show the session's data, so a 404 later
is not a broken request), then after the claim, where it must answer exactly as it does for a session
that never existed, and show none of the session's data.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pytest
import requests
import whylogs as why
from conftest import ANY_ORG_KEY, ORG_KEY, STORAGE_NAMES
from fastapi.routing import iter_route_contexts

from whylogs_songbird.models import GUEST_MODEL_ID
from whylogs_songbird.server.storage.base import new_id

pytestmark = pytest.mark.parametrize("storage_config", STORAGE_NAMES, indirect=True)

TIMEOUT = 30
TS = 1_700_000_000_000
COLUMN = "claimedcolumnmarker"
ALIAS = "claimed-alias-marker"
SEGMENT = ("region", "claimed-segment-marker")


def _profile(seed: int) -> bytes:
    df = pd.DataFrame({COLUMN: [seed + i for i in range(20)], "other": [f"v{i % 3}" for i in range(20)]})
    return why.log(df).view().serialize()


@dataclass
class Seeded:
    """A session holding a batch (segmented), a reference, and a spare upload URL to PUT to."""

    url: str
    session_id: str
    reference_id: str
    batch_id: str
    put_url: str

    def markers(self) -> list[str]:
        """What no answer about the claimed session may show."""
        return [COLUMN, ALIAS, SEGMENT[1], self.reference_id, self.batch_id]


def seed_session(url: str) -> Seeded:
    session_id = requests.post(f"{url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    batch = requests.post(
        f"{url}/v0/sessions/{session_id}/upload",
        json={"datasetTimestamp": TS, "segmentTags": [{"key": SEGMENT[0], "value": SEGMENT[1]}]},
        timeout=TIMEOUT,
    ).json()
    reference = requests.post(
        f"{url}/v0/sessions/{session_id}/reference", json={"alias": ALIAS, "datasetTimestamp": TS}, timeout=TIMEOUT
    ).json()
    spare = requests.post(
        f"{url}/v0/sessions/{session_id}/upload", json={"datasetTimestamp": TS + 1, "segmentTags": []}, timeout=TIMEOUT
    ).json()
    for slot, seed in ((batch, 0), (reference, 100)):
        assert requests.put(slot["uploadUrl"], data=_profile(seed), timeout=TIMEOUT).status_code == 200
    return Seeded(url, session_id, reference["id"], batch["id"], spare["uploadUrl"])


@dataclass(frozen=True)
class Walk:
    """How a guest reaches one session-scoped route: ``send(seeded, session_id)`` gives the answers
    (several for a keyed route). ``live`` is what they are while the session is live (None: the
    walk cannot run on a live session); ``like_unknown`` False when an unknown session cannot be
    walked the same way (an upload URL names an upload, not a session)."""

    send: Callable[[Seeded, str], list[requests.Response]]
    live: int | None = 200
    shows_data: bool = False
    like_unknown: bool = True


def _post(path: str, body: dict | None = None, **kwargs) -> Callable[[Seeded, str], list[requests.Response]]:
    return lambda s, sid: [requests.post(s.url + path.format(sid=sid), json=body, timeout=TIMEOUT, **kwargs)]


def _get(path: str, **kwargs) -> Callable[[Seeded, str], list[requests.Response]]:
    return lambda s, sid: [requests.get(s.url + path.format(sid=sid, ref=s.reference_id), timeout=TIMEOUT, **kwargs)]


def _delete(path: str) -> Callable[[Seeded, str], list[requests.Response]]:
    return lambda s, sid: [requests.delete(s.url + path.format(sid=sid, batch=s.batch_id), timeout=TIMEOUT)]


def _link(s: Seeded, sid: str) -> list[requests.Response]:
    body = {"batchProfileTimestamps": [TS], "referenceProfileIds": [s.reference_id]}
    return [requests.post(f"{s.url}/v0/sessions/observatory-link/{sid}", json=body, timeout=TIMEOUT)]


def _get_session(s: Seeded, sid: str) -> list[requests.Response]:
    url = f"{s.url}/v0/sessions/{sid}"
    keyless = requests.get(url, timeout=TIMEOUT)
    return [keyless, requests.get(url, headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)]


def _claim_elsewhere(s: Seeded, sid: str) -> list[requests.Response]:
    url = f"{s.url}/v0/sessions/{sid}/claim"
    keyless = requests.post(url, params={"org_id": "org-test"}, timeout=TIMEOUT)
    return [keyless, requests.post(url, params={"org_id": "org-test"}, headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)]


def _put(s: Seeded, sid: str) -> list[requests.Response]:
    if not s.put_url.startswith(s.url + "/"):
        return []  # a presigned URL of the object store (team store): not a route of this server
    return [requests.put(s.put_url, data=_profile(7), timeout=TIMEOUT)]


#: Every session-scoped route, by (method, path): how a guest walks it.
WALKS: dict[tuple[str, str], Walk] = {
    ("POST", "/v0/sessions/observatory-link/{session_id}"): Walk(_link),
    ("GET", "/v0/sessions/{session_id}"): Walk(_get_session, live=None),  # keyed: 401 without a key
    ("POST", "/v0/sessions/{session_id}/upload"): Walk(_post("/v0/sessions/{sid}/upload", {"datasetTimestamp": TS})),
    ("POST", "/v0/sessions/{session_id}/reference"): Walk(_post("/v0/sessions/{sid}/reference", {"alias": "late"})),
    ("POST", "/v0/sessions/{session_id}/references"): Walk(
        _post("/v0/sessions/{sid}/references", {"references": [{"alias": "late"}]})
    ),
    ("POST", "/v0/sessions/{session_id}/claim"): Walk(_claim_elsewhere, live=None),  # the claim itself
    ("PUT", "/v0/uploads/{upload_id}"): Walk(_put, like_unknown=False),
    ("GET", "/sessions/{session_id}"): Walk(_get("/sessions/{sid}"), shows_data=True),
    ("GET", "/resources/{model_id}/profiles"): Walk(
        _get(f"/resources/{GUEST_MODEL_ID}/profiles?profile={{ref}}&profile={TS}&sessionToken={{sid}}"),
        shows_data=True,
    ),
    ("GET", "/api/v1/sessions/{session_id}/timeline"): Walk(
        _get("/api/v1/sessions/{sid}/timeline?granularity=day&reference={ref}"), shows_data=True
    ),
    ("GET", "/sessions/{session_id}/timeline"): Walk(
        _get("/sessions/{sid}/timeline?granularity=day&reference={ref}"), shows_data=True
    ),
    # deleting cannot be walked on the live session (it would be gone for the walks after it)
    ("DELETE", "/v0/sessions/{session_id}"): Walk(_delete("/v0/sessions/{sid}"), live=None),
    ("GET", "/api/v1/sessions/{session_id}/export"): Walk(_get("/api/v1/sessions/{sid}/export"), shows_data=True),
    ("DELETE", "/v0/sessions/{session_id}/profiles/{profile_id}"): Walk(
        _delete("/v0/sessions/{sid}/profiles/{batch}"), live=None
    ),
}

#: Routes that name no session, with the reason; they are walked too, and must not show the claimed one.
NOT_SESSION_SCOPED: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "the API description",
    ("GET", "/docs"): "the API description",
    ("GET", "/docs/oauth2-redirect"): "the API description",
    ("POST", "/v0/sessions"): "creates a new session",
    ("GET", "/static/{name}"): "static files",
    ("GET", "/"): "the landing page (lists unclaimed sessions only)",
    ("GET", "/_local/stats"): "operation counters",
    ("GET", "/healthz"): "liveness",
    ("GET", "/metrics"): "the operator's metrics (open on a loopback bind; a token elsewhere)",
    ("POST", "/api/v1/import"): "creates a new session from a bundle",
    ("GET", "/login"): "the login form of organizations' dataset pages",
    ("POST", "/login"): "a login with an organization's API key (a JSON body is no login form)",
}
#: What an unscoped route answers to the walk's request when that is not 200 (a JSON body is no bundle).
_UNSCOPED_STATUS = {("POST", "/api/v1/import"): 400, ("POST", "/login"): 400}
#: Routes of organizations' datasets (the WhyLabs log API): no session in them, and every one needs an
#: org's API key. Walked without a key after the claim: 401, showing nothing of the claimed session.
ORG_KEYED = {
    ("GET", "/api/v1/organizations/{org_id}/datasets/{dataset_id}/timeline"),
    ("POST", "/v0/organizations/{org_id}/dataset-profiles/models/{dataset_id}/reference-profile"),
    ("POST", "/v0/organizations/{org_id}/log/async/{dataset_id}"),
    ("POST", "/v0/organizations/{org_id}/log/observatory-link/{dataset_id}"),
    ("POST", "/v0/organizations/{org_id}/log/reference/{dataset_id}"),
    ("POST", "/v1/log/async"),
    ("GET", "/v0/organizations/{org_id}/dataset/{dataset_id}/weights"),
    ("PUT", "/v0/organizations/{org_id}/dataset/{dataset_id}/weights"),
    ("GET", "/v0/organizations/{org_id}/models/{dataset_id}/schema"),
    ("GET", "/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id:path}"),
    ("PUT", "/v0/organizations/{org_id}/models/{dataset_id}/schema/column/{column_id:path}"),
    ("PUT", "/v0/organizations/{org_id}/models/{dataset_id}/schema/metric"),
    ("POST", "/v1/transaction"),
    ("GET", "/v1/transaction"),
    ("POST", "/v1/transaction/log"),
    ("POST", "/v1/transaction/commit"),
    ("POST", "/v1/transaction/abort"),
    ("DELETE", "/v0/organizations/{org_id}/datasets/{dataset_id}"),
    ("DELETE", "/v0/organizations/{org_id}/datasets/{dataset_id}/profiles/{profile_id}"),
}

#: The pages of organizations' datasets: no session in them, and every one needs a link's token, a login
#: cookie or an org's key. Walked without one after the claim: a page redirects to the login (303), its
#: JSON answers 401; neither shows anything of the claimed session.
ORG_PAGES = {
    ("GET", "/organizations/{org_id}/datasets/{dataset_id}"): 303,
    ("GET", "/organizations/{org_id}/datasets/{dataset_id}/profiles"): 303,
    ("GET", "/organizations/{org_id}/datasets/{dataset_id}/timeline"): 303,
    ("GET", "/organizations/{org_id}/datasets/{dataset_id}/timeline/data"): 401,
}

_UNSCOPED_PATHS = {
    "/static/{name}": "/static/observatory.js",
}


def app_routes(server) -> list[tuple[str, str]]:
    """(method, path) of every route of the running app (HEAD left out: it follows GET)."""
    found = set()
    for route in iter_route_contexts(server.app.routes):
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return sorted(found)


def _normalized(response: requests.Response, session_id: str) -> tuple[int, str]:
    return response.status_code, response.text.replace(session_id, "SESSION")


def test_every_guest_route_forgets_a_claimed_session(server_factory):
    server = server_factory(list_sessions=True)
    routes = app_routes(server)
    known = set(WALKS) | set(NOT_SESSION_SCOPED) | ORG_KEYED | set(ORG_PAGES)
    unclassified = [r for r in routes if r not in known]
    assert not unclassified, (
        f"classify these routes in WALKS, NOT_SESSION_SCOPED, ORG_KEYED or ORG_PAGES: {unclassified}"
    )
    assert not [r for r in NOT_SESSION_SCOPED if "{session_id}" in r[1]], "a route naming a session must be walked"
    assert known == set(routes), "a listed route the app no longer has"

    seeded = seed_session(server.url)
    sid = seeded.session_id
    for key, walk in WALKS.items():  # live: every walk is a working request that shows the session
        if walk.live is None:
            continue
        for r in walk.send(seeded, sid):
            assert r.status_code == walk.live, (key, r.status_code, r.text[:300])
            if walk.shows_data:
                assert COLUMN in r.text or ALIAS in r.text, (key, r.text[:300])
    r = requests.get(f"{server.url}/", timeout=TIMEOUT)
    assert sid in r.text, "the landing page lists the live session"

    claim = requests.post(
        f"{server.url}/v0/sessions/{sid}/claim",
        params={"org_id": "org-owner"},
        headers={"X-API-Key": ANY_ORG_KEY},
        timeout=TIMEOUT,
    )
    assert claim.status_code == 200, claim.text

    unknown = new_id("session")
    for key, walk in WALKS.items():
        answers = walk.send(seeded, sid)
        for r in answers:
            assert r.status_code in (401, 404), (key, r.status_code, r.text[:300])
            for marker in seeded.markers():
                assert marker not in r.text, (key, marker, r.text[:300])
        assert not answers or any(r.status_code == 404 for r in answers), key
        if walk.like_unknown:
            strangers = walk.send(seeded, unknown)
            assert [_normalized(r, unknown) for r in strangers] == [_normalized(r, sid) for r in answers], key

    for method, path in NOT_SESSION_SCOPED:
        r = requests.request(
            method, server.url + _UNSCOPED_PATHS.get(path, path), timeout=TIMEOUT, json={"userId": "u"}
        )
        assert r.status_code == _UNSCOPED_STATUS.get((method, path), 200), (method, path, r.status_code)
        for marker in (sid, *seeded.markers()):
            assert marker not in r.text, (method, path, marker)

    for method, path in sorted(ORG_KEYED):
        concrete = path.replace(":path", "").format(
            org_id="org-owner", dataset_id="model-1", column_id="c", profile_id=seeded.reference_id
        )
        body = {"datasetTimestamp": TS, "batchProfileTimestamps": [TS], "referenceProfileIds": [seeded.reference_id]}
        r = requests.request(method, server.url + concrete, timeout=TIMEOUT, json=body)
        assert r.status_code == 401, (method, path, r.status_code)
        for marker in (sid, *seeded.markers()):
            assert marker not in r.text, (method, path, marker)

    for (method, path), status in sorted(ORG_PAGES.items()):
        concrete = path.format(org_id="org-owner", dataset_id="model-1")
        r = requests.request(
            method, server.url + concrete, params={"profile": TS}, timeout=TIMEOUT, allow_redirects=False
        )
        assert r.status_code == status, (method, path, r.status_code)
        assert status != 303 or r.headers["location"].startswith("/login?next=")
        for marker in (sid, *seeded.markers()):
            assert marker not in r.text, (method, path, marker)

    # the owner's side still finds it
    r = requests.get(f"{server.url}/v0/sessions/{sid}", headers={"X-API-Key": ANY_ORG_KEY}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["session"]["orgId"] == "org-owner"


def test_a_claim_answers_alike_for_unknown_and_claimed_sessions(server):
    """A claim never tells a stranger that a session exists: same status and words either way."""
    claimed = seed_session(server.url).session_id
    url = f"{server.url}/v0/sessions/{{}}/claim"
    first = requests.post(
        url.format(claimed), params={"org_id": "org-a"}, headers={"X-API-Key": ANY_ORG_KEY}, timeout=TIMEOUT
    )
    assert first.status_code == 200
    unknown = new_id("session")
    answers = [
        requests.post(url.format(sid), params={"org_id": "org-test"}, headers={"X-API-Key": ORG_KEY}, timeout=TIMEOUT)
        for sid in (claimed, unknown)
    ]
    assert [r.status_code for r in answers] == [404, 404]
    messages = [r.json()["message"].replace(sid, "ID") for r, sid in zip(answers, (claimed, unknown))]
    assert messages[0] == messages[1] and re.search("unknown.*claimed", messages[0])
