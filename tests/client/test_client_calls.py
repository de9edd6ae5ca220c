"""SongbirdClient's calls beyond the seven session operations (client.py), fast enough for
scripts/mutation to run per mutant: the WhyLabs log API on a dataset (names, paths, key, bodies,
answers and the key's refusals), deleting, exporting and importing bundles, how references are
split into batches, and how urllib3's retry warnings of our requests are quietened.

Calls made through the client's session go to the fake session of tests/support/client_wire.py,
which records each call's method, URL, body, headers and timeouts. What only the wire shows
(streamed bundles, the import's own session, which methods urllib3 retries) goes to a scripted
HTTP server on loopback. test_client_logic.py holds the session operations and the plumbing.
"""

from __future__ import annotations

import io
import json
import logging
import os
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3.util.retry as urllib3_retry
from client_wire import ENDPOINT, accept, faked, reset, response, scripted_loopback, sent
from conftest import free_port

from whylogs_songbird import client as C
from whylogs_songbird.client import ImportedSession, SongbirdClient, reference_batches
from whylogs_songbird.errors import (
    AuthError,
    ConfigError,
    RequestLimitError,
    SessionNotFoundError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdError,
    SongbirdProtocolError,
)
from whylogs_songbird.models import LogReferenceRequest, SegmentTag

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/client.py")

HOSTED_HINT = (
    " (https://api.whylabsapp.com is the hosted WhyLabs service, which is being wound down: remove the endpoint "
    "setting to publish to a local songbird server, started for you.)"
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replaces conftest's fixture of that name (the client reads no settings and starts nothing):
    no songbird, proxy or CA-bundle variables, and urllib3's waits between attempts are recorded
    (and returned) instead of slept."""
    for name in list(os.environ):
        if name.startswith("SONGBIRD_") or name in ("WHYLABS_API_ENDPOINT", "WHYLABS_API_KEY"):
            monkeypatch.delenv(name)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    waits: list[float] = []
    monkeypatch.setattr(urllib3_retry, "time", SimpleNamespace(sleep=waits.append, time=lambda: 0.0))
    return waits


@pytest.fixture(scope="module")
def loopback() -> Any:
    with scripted_loopback() as httpd:
        yield httpd


@pytest.fixture
def scripted(loopback: Any) -> SimpleNamespace:
    """The loopback server's state, reset: ``script``, ``seen`` requests, ``release``, ``url``."""
    return reset(loopback)


def failure(call: Any, *answers: Any, **options: Any) -> SongbirdError:
    client, fake = faked(*answers, **options)
    with pytest.raises(SongbirdError) as caught:
        call(client)
    return caught.value


def keyed(key: str) -> dict[str, str]:
    return accept(**{"X-API-Key": key})


# -- organization and dataset names ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["org-1234", "a", "7", "Z" + "z" * 127, "model.v2_final-1", "A-"])
def test_a_name_of_allowed_characters_is_kept(name):
    assert C.validate_name(name, "dataset") is name


@pytest.mark.parametrize(
    "bad, shown",
    [
        ("", "''"),
        ("-org", "'-org'"),
        (".org", "'.org'"),
        ("_org", "'_org'"),
        ("a" * 129, repr("a" * 80)),
        ("org/1", "'org/1'"),
        ("org 1", "'org 1'"),
        ("org-1\n", "'org-1\\n'"),
        ("modèle", "'modèle'"),
        (5, "'5'"),
        (None, "'None'"),
    ],
)
def test_a_name_that_is_no_id_is_refused_with_what_an_id_looks_like(bad, shown):
    with pytest.raises(ConfigError) as caught:
        C.validate_name(bad, "organization")
    assert str(caught.value) == (
        f"{shown} is not a valid organization id: use 1 to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (for example org-1234 or model-1)."
    )


def test_a_dataset_path_names_the_route_the_organization_and_the_dataset():
    client = SongbirdClient(ENDPOINT)
    assert client._dataset_path("async", "org-1", "model-7") == "/v0/organizations/org-1/log/async/model-7"
    assert client._dataset_path("observatory-link", "O.r_g", "m") == "/v0/organizations/O.r_g/log/observatory-link/m"


@pytest.mark.parametrize(
    "org, dataset, what, shown", [("org/1", "model-1", "organization", "org/1"), ("org-1", "../x", "dataset", "../x")]
)
def test_a_dataset_path_refuses_a_name_saying_which_one(org, dataset, what, shown):
    with pytest.raises(ConfigError) as caught:
        SongbirdClient(ENDPOINT)._dataset_path("async", org, dataset)
    assert str(caught.value).startswith(f"'{shown}' is not a valid {what} id: use 1 to 128 letters")


# -- the WhyLabs log API on a dataset -----------------------------------------------------------------

UPLOAD = "http://127.0.0.1:9/up/log-1?signature=s"
ASYNC_ANSWER = {
    "id": "log-1",
    "modelId": "model-1",
    "uploadUrl": UPLOAD,
    "uploadTimestamp": 1_700_000_000_123,
    "tags": {"tags": [{"key": "k", "value": "v"}]},
}
REFERENCE_ANSWER = {
    "id": "ref-1",
    "modelId": "model-1",
    "alias": "train",
    "uploadUrl": UPLOAD,
    "uploadTimestamp": 1_700_000_000_456,
}
LINK_ANSWER = {"observatoryUrl": "http://o/all", "individualObservatoryUrls": ["http://o/1", "http://o/2"]}


def reference_profile_answer(urls: int) -> dict[str, Any]:
    return {
        "id": "ref-2",
        "alias": "train",
        "datasetId": "model-1",
        "uploadTimestamp": 9,
        "segments": [f"seg-{n}" for n in range(urls)],
        "uploadUrls": [f"http://127.0.0.1:9/up/{n}" for n in range(urls)],
    }


def test_log_async_sends_the_timestamp_and_tags_with_the_key_given_or_the_clients():
    client, fake = faked(response(200, ASYNC_ANSWER), response(200, ASYNC_ANSWER), api_key="client.key")
    got = client.log_async("org-1", "model-1", 1_700_000_000_000, [SegmentTag(key="k", value="v")], api_key="call.key")
    assert (got.id, got.model_id, got.upload_url, got.upload_timestamp) == (
        "log-1",
        "model-1",
        UPLOAD,
        1_700_000_000_123,
    )
    assert [(t.key, t.value) for t in got.tags.tags] == [("k", "v")]
    client.log_async("org-1", "model-1", 5)
    url = ENDPOINT + "/v0/organizations/org-1/log/async/model-1"
    assert fake.calls == [
        (
            "POST",
            url,
            sent(
                json={"datasetTimestamp": 1_700_000_000_000, "segmentTags": [{"key": "k", "value": "v"}]},
                headers=keyed("call.key"),
                params=None,
            ),
        ),
        ("POST", url, sent(json={"datasetTimestamp": 5, "segmentTags": []}, headers=keyed("client.key"), params=None)),
    ]


def test_log_reference_sends_the_alias_and_timestamp_given():
    client, fake = faked(response(200, REFERENCE_ANSWER), response(200, REFERENCE_ANSWER), api_key="client.key")
    got = client.log_reference("org-1", "model-1", alias="train", dataset_timestamp=7, api_key="call.key")
    assert (got.id, got.model_id, got.alias, got.upload_url, got.upload_timestamp) == (
        "ref-1",
        "model-1",
        "train",
        UPLOAD,
        1_700_000_000_456,
    )
    client.log_reference("org-1", "model-1")
    url = ENDPOINT + "/v0/organizations/org-1/log/reference/model-1"
    assert fake.calls == [
        ("POST", url, sent(json={"alias": "train", "datasetTimestamp": 7}, headers=keyed("call.key"), params=None)),
        ("POST", url, sent(json={}, headers=keyed("client.key"), params=None)),
    ]


def test_create_reference_profile_sends_one_segment_per_upload_url():
    client, fake = faked(
        response(200, reference_profile_answer(2)), response(200, reference_profile_answer(1)), api_key="client.key"
    )
    segments = [[SegmentTag(key="k", value="a")], [SegmentTag(key="k", value="b"), SegmentTag(key="j", value="c")]]
    got = client.create_reference_profile("org-1", "model-1", "train", 1_700_000_000_000, segments, api_key="call.key")
    assert (got.id, got.alias, got.dataset_id, got.upload_timestamp, got.segments, got.upload_urls) == (
        "ref-2",
        "train",
        "model-1",
        9,
        ["seg-0", "seg-1"],
        ["http://127.0.0.1:9/up/0", "http://127.0.0.1:9/up/1"],
    )
    unsegmented = client.create_reference_profile("org-1", "model-1", "base", None, [])
    assert unsegmented.upload_urls == ["http://127.0.0.1:9/up/0"], "no segments: one upload URL for the whole"
    url = ENDPOINT + "/v0/organizations/org-1/dataset-profiles/models/model-1/reference-profile"
    wire_segments = [
        {"tags": [{"key": "k", "value": "a"}]},
        {"tags": [{"key": "k", "value": "b"}, {"key": "j", "value": "c"}]},
    ]
    assert fake.calls == [
        (
            "POST",
            url,
            sent(
                json={"alias": "train", "datasetTimestamp": 1_700_000_000_000, "segments": wire_segments},
                headers=keyed("call.key"),
                params=None,
            ),
        ),
        ("POST", url, sent(json={"alias": "base", "segments": []}, headers=keyed("client.key"), params=None)),
    ]


@pytest.mark.parametrize("segments, urls", [(0, 0), (0, 2), (1, 0), (1, 2), (2, 1), (2, 3)])
def test_a_reference_profile_answer_with_the_wrong_number_of_urls_is_a_protocol_error(segments, urls):
    tags = [[SegmentTag(key="k", value=str(n))] for n in range(segments)]
    error = failure(
        lambda c: c.create_reference_profile("org-1", "model-1", "a", None, tags, api_key="k.s"),
        response(200, reference_profile_answer(urls)),
    )
    assert type(error) is SongbirdProtocolError
    assert str(error) == (
        f"create_reference_profile asked for {max(segments, 1)} upload URLs but the server answered with {urls}."
    )


def test_get_dataset_observatory_link_sends_the_profiles_to_show():
    client, fake = faked(response(200, LINK_ANSWER), response(200, {"observatoryUrl": "http://o/none"}), api_key="c.k")
    link = client.get_dataset_observatory_link("org-1", "model-1", [1_700_000_000_000], ["ref-1"], api_key="k.s")
    assert (link.observatory_url, link.individual_observatory_urls) == ("http://o/all", ["http://o/1", "http://o/2"])
    assert client.get_dataset_observatory_link("org-1", "model-1").individual_observatory_urls == []
    url = ENDPOINT + "/v0/organizations/org-1/log/observatory-link/model-1"
    assert fake.calls == [
        (
            "POST",
            url,
            sent(
                json={"batchProfileTimestamps": [1_700_000_000_000], "referenceProfileIds": ["ref-1"]},
                headers=keyed("k.s"),
                params=None,
            ),
        ),
        (
            "POST",
            url,
            sent(json={"batchProfileTimestamps": [], "referenceProfileIds": []}, headers=keyed("c.k"), params=None),
        ),
    ]


def log_async(c: SongbirdClient, **names: str) -> Any:
    return c.log_async(names.get("org", "org-1"), names.get("dataset", "model-1"), 5)


def log_reference(c: SongbirdClient, **names: str) -> Any:
    return c.log_reference(names.get("org", "org-1"), names.get("dataset", "model-1"), alias="a")


def reference_profile(c: SongbirdClient, **names: str) -> Any:
    return c.create_reference_profile(names.get("org", "org-1"), names.get("dataset", "model-1"), "a", None, [])


def dataset_link(c: SongbirdClient, **names: str) -> Any:
    return c.get_dataset_observatory_link(names.get("org", "org-1"), names.get("dataset", "model-1"))


DATASET_CALLS = [
    (log_async, "log_async"),
    (log_reference, "log_reference"),
    (reference_profile, "create_reference_profile"),
    (dataset_link, "get_dataset_observatory_link"),
]


@pytest.mark.parametrize("call, operation", DATASET_CALLS)
@pytest.mark.parametrize("key", [None, ""])
def test_every_dataset_call_needs_a_key_and_sends_nothing_without_one(call, operation, key):
    client, fake = faked(api_key=key)
    with pytest.raises(ConfigError) as caught:
        call(client)
    assert str(caught.value) == "This operation needs a WhyLabs API key: pass api_key=..., or set SONGBIRD_API_KEY."
    assert fake.calls == []


@pytest.mark.parametrize("call, operation", DATASET_CALLS)
@pytest.mark.parametrize(
    "names, refused",
    [
        ({"org": "org 1"}, "'org 1' is not a valid organization id"),
        ({"dataset": ".."}, "'..' is not a valid dataset id"),
    ],
)
def test_every_dataset_call_refuses_a_bad_name_before_sending(call, operation, names, refused):
    client, fake = faked(api_key="k.s")
    with pytest.raises(ConfigError) as caught:
        call(client, **names)
    assert str(caught.value).startswith(refused + ": use 1 to 128 letters")
    assert fake.calls == []


def test_a_dataset_call_breaking_the_limits_is_refused_before_sending():
    client, fake = faked(api_key="k.s")
    with pytest.raises(RequestLimitError):
        client.log_async("org-1", "model-1", 5, [SegmentTag(key=f"k{n}", value="v") for n in range(65)])
    with pytest.raises(RequestLimitError):
        client.log_reference("org-1", "model-1", alias="a" * 257)
    with pytest.raises(RequestLimitError):
        client.create_reference_profile("org-1", "model-1", "a" * 257, None, [])
    assert fake.calls == []


KEY_REFUSED = (
    "the API key was refused (unknown, revoked or missing on this server) (401). "
    "Check the key (api_key=..., SONGBIRD_API_KEY or WHYLABS_API_KEY)."
)
OTHER_ORG = (
    "this key belongs to another organization (403). "
    "Use a key of the organization you named (org_id=..., SONGBIRD_ORG_ID), or name the key's org."
)


@pytest.mark.parametrize("call, operation", DATASET_CALLS)
@pytest.mark.parametrize("status, advice", [(401, KEY_REFUSED), (403, OTHER_ORG)])
def test_a_refused_key_on_a_dataset_says_why_and_what_to_do(call, operation, status, advice):
    error = failure(lambda c: call(c), response(status, {"message": "nope"}), api_key="k.s")
    assert type(error) is AuthError
    assert str(error) == f"{operation}: {advice}"
    assert (error.status, error.operation, error.server_message) == (status, operation, "nope")


@pytest.mark.parametrize("status, advice", [(401, KEY_REFUSED), (403, OTHER_ORG)])
def test_a_refused_key_on_a_dataset_of_the_hosted_service_gets_its_hint(status, advice):
    error = failure(log_async, response(status, b""), api_key="k.s", endpoint="https://api.whylabsapp.com")
    assert str(error) == f"log_async: {advice}{HOSTED_HINT}"


@pytest.mark.parametrize(
    "status, kind, message",
    [
        (400, SongbirdApiError, "log_async: the server answered 400: bad."),
        (402, SongbirdApiError, "log_async: the server answered 402: bad."),
        (404, SongbirdApiError, "log_async: the server answered 404: bad. Check that the endpoint is a songbird API."),
        (410, SongbirdApiError, "log_async: the server answered 410: bad."),
    ],
)
def test_other_refusals_of_a_dataset_call_are_no_key_errors(status, kind, message):
    error = failure(log_async, response(status, {"message": "bad"}), api_key="k.s")
    assert type(error) is kind
    assert str(error) == message


# -- deleting ---------------------------------------------------------------------------------------


def test_delete_session_and_delete_profile_send_a_delete_without_key_or_body():
    client, fake = faked(response(204), response(200, b"{}"), api_key="k.s")
    assert client.delete_session("session-1") is None
    assert client.delete_profile("session-1", "ref/1 x?y") is None
    assert fake.calls == [
        ("DELETE", ENDPOINT + "/v0/sessions/session-1", sent(json=None, headers=accept(), params=None)),
        (
            "DELETE",
            ENDPOINT + "/v0/sessions/session-1/profiles/ref%2F1%20x%3Fy",
            sent(json=None, headers=accept(), params=None),
        ),
    ]


def test_deleting_refuses_a_bad_session_id_before_sending():
    client, fake = faked()
    for call in (lambda: client.delete_session("a/b"), lambda: client.delete_profile("..", "log-1")):
        with pytest.raises(ConfigError, match="is not a valid session id"):
            call()
    assert fake.calls == []


@pytest.mark.parametrize(
    "call, status, kind, message",
    [
        (
            lambda c: c.delete_session("session-1"),
            404,
            SessionNotFoundError,
            "delete_session: the server answered 404: gone. The session is unknown, expired or claimed: "
            "start a new session.",
        ),
        (
            lambda c: c.delete_session("session-1"),
            410,
            SessionNotFoundError,
            "delete_session: the server answered 410: gone. The session is unknown, expired or claimed: "
            "start a new session.",
        ),
        (
            lambda c: c.delete_profile("session-1", "log-1"),
            404,
            SongbirdApiError,
            "delete_profile: the server answered 404: gone.",
        ),
        (
            lambda c: c.delete_profile("session-1", "log-1"),
            410,
            SongbirdApiError,
            "delete_profile: the server answered 410: gone.",
        ),
        (
            lambda c: c.delete_profile("session-1", "log-1"),
            403,
            AuthError,
            "delete_profile: the server answered 403: gone. Check the API key (SONGBIRD_API_KEY) and that it "
            "belongs to the organization you named.",
        ),
    ],
)
def test_a_refused_delete_says_what_is_gone(call, status, kind, message):
    error = failure(call, response(status, {"message": "gone"}))
    assert type(error) is kind
    assert str(error) == message


BUSY = (503, {}, b'{"message": "busy"}')


def test_a_delete_is_sent_once_even_when_the_server_is_busy(scripted, isolated_settings):
    scripted.script = [BUSY, (204, {}, b"")]
    with pytest.raises(SongbirdApiError) as caught:
        SongbirdClient(scripted.url).delete_profile("session-1", "log-1")
    assert str(caught.value) == "delete_profile: the server answered 503: busy. The server failed: try again later."
    assert [(method, path) for method, path, _, _ in scripted.seen] == [
        ("DELETE", "/v0/sessions/session-1/profiles/log-1")
    ]
    assert isolated_settings == []


# -- exporting a session -------------------------------------------------------------------------------


class Target(io.BytesIO):
    """A bundle's destination that remembers the size of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, chunk: Any) -> int:
        self.writes.append(len(chunk))
        return super().write(chunk)


def test_export_streams_the_bundle_in_pieces_of_a_mebibyte(scripted):
    bundle = b"PK" + b"z" * MIB + b"end"
    scripted.script = [(200, {"Content-Type": "application/zip"}, bundle)]
    target = Target()
    assert SongbirdClient(scripted.url).export_session("session-1", target) == MIB + 5
    assert target.getvalue() == bundle
    assert target.writes == [MIB, 5]
    [(method, path, headers, body)] = scripted.seen
    assert (method, path, headers["Accept"], body) == (
        "GET",
        "/api/v1/sessions/session-1/export",
        "application/zip",
        b"",
    )


def test_an_empty_bundle_writes_nothing(scripted):
    scripted.script = [(200, {}, b"")]
    target = Target()
    assert SongbirdClient(scripted.url).export_session("session-1", target) == 0
    assert target.writes == []


def test_an_export_broken_off_says_how_much_arrived(scripted):
    scripted.script = [(200, {}, b"z" * (MIB + 5), MIB + 100)]
    target = Target()
    client = SongbirdClient(scripted.url)
    with pytest.raises(SongbirdConnectionError) as caught:
        client.export_session("session-1", target)
    assert str(caught.value) == (
        f"export_session: the bundle from {scripted.url} broke off after {MIB} bytes; try again."
    )
    assert target.writes == [MIB]


@pytest.mark.parametrize(
    "status, kind, message",
    [
        (201, SongbirdApiError, "export_session: the server answered 201: odd."),
        (
            404,
            SongbirdApiError,
            "export_session: the server answered 404: odd. Check that the endpoint is a songbird API.",
        ),
        (
            503,
            SongbirdApiError,
            "export_session: the server answered 503: odd. The server failed, after 1 retries: try again later.",
        ),
    ],
)
def test_an_export_that_is_not_200_writes_nothing_and_says_why(scripted, status, kind, message):
    scripted.script = [(status, {"Content-Type": "application/json"}, b'{"message": "odd"}')]
    target = Target()
    with pytest.raises(SongbirdError) as caught:
        SongbirdClient(scripted.url, max_retries=1).export_session("session-1", target)
    assert type(caught.value) is kind
    assert str(caught.value) == message
    assert target.writes == []


def test_an_export_nobody_listens_for_names_the_operation():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SongbirdConnectionError) as caught:
        SongbirdClient(url, max_retries=0).export_session("session-1", Target())
    assert str(caught.value) == (
        f"export_session: could not reach {url}/api/v1/sessions/session-1/export: the connection was refused "
        "(nothing listens there). Check that the server is running and the port."
    )


def test_export_refuses_a_bad_session_id_before_sending(scripted):
    with pytest.raises(ConfigError, match="^'a/b' is not a valid session id"):
        SongbirdClient(scripted.url).export_session("a/b", Target())
    assert scripted.seen == []


# -- importing a bundle ---------------------------------------------------------------------------------

IMPORTED = b'{"sessionId": "session-9", "profiles": 3, "observatoryUrl": "http://o/s9"}'


def test_import_sends_the_bundle_and_returns_the_new_session(scripted):
    scripted.script = [(201, {"Content-Type": "application/json"}, IMPORTED)]
    prepared: list[int] = []
    client = SongbirdClient(scripted.url, prepare=lambda: prepared.append(len(scripted.seen)))
    got = client.import_bundle(io.BytesIO(b"PK bundle bytes"))
    assert got == ImportedSession(session_id="session-9", profiles=3, url="http://o/s9")
    assert prepared == [0], "prepared before anything was sent"
    [(method, path, headers, body)] = scripted.seen
    assert (method, path, body) == ("POST", "/api/v1/import", b"PK bundle bytes")
    assert (headers["Content-Type"], headers["Accept"]) == ("application/zip", "application/json")


def test_an_import_answer_of_other_types_is_read_as_the_contract_says(scripted):
    scripted.script = [(201, {}, b'{"sessionId": 12, "profiles": "4", "observatoryUrl": "http://o/12"}')]
    got = SongbirdClient(scripted.url).import_bundle(io.BytesIO(b"PK"))
    assert (got.session_id, got.profiles, got.url) == ("12", 4, "http://o/12")


@pytest.mark.parametrize(
    "answer, kind, message",
    [
        (
            (200, {}, IMPORTED),
            SongbirdApiError,
            "import_bundle: the server answered 200: " + IMPORTED.decode() + ".",
        ),
        (
            (400, {}, b'{"message": "This is not a bundle."}'),
            SongbirdApiError,
            "import_bundle: the server answered 400: This is not a bundle.",
        ),
        (BUSY, SongbirdApiError, "import_bundle: the server answered 503: busy. The server failed: try again later."),
        (
            (307, {"Location": "/elsewhere?signature=s"}, b""),
            SongbirdApiError,
            "import_bundle: the server answered 307, a redirect to /elsewhere, which is not followed: nothing was "
            "stored or changed. Use the final URL as the endpoint (e.g. https, or without a path).",
        ),
    ],
)
def test_an_import_is_sent_once_and_anything_but_201_is_an_error(scripted, answer, kind, message):
    scripted.script = [answer, (201, {}, IMPORTED)]
    with pytest.raises(SongbirdError) as caught:
        SongbirdClient(scripted.url).import_bundle(io.BytesIO(b"PK"))
    assert type(caught.value) is kind
    assert str(caught.value) == message
    assert [(method, path) for method, path, _, _ in scripted.seen] == [("POST", "/api/v1/import")]


def test_an_import_nobody_listens_for_says_what_to_check():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SongbirdConnectionError) as caught:
        SongbirdClient(url).import_bundle(io.BytesIO(b"PK"))
    assert str(caught.value) == (
        f"import_bundle: could not send the bundle to {url}/api/v1/import: the connection was refused "
        "(nothing listens there). Check that the server is running and the port."
    )


def test_an_import_goes_through_the_proxy_of_the_environment_and_never_reads_netrc(scripted, monkeypatch, tmp_path):
    target = f"http://127.0.0.1:{free_port()}"  # nothing listens there: only the proxy can answer
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", scripted.url)
    scripted.script = [(201, {}, IMPORTED)]
    assert SongbirdClient(target).import_bundle(io.BytesIO(b"PK")).session_id == "session-9"
    [(method, path, headers, body)] = scripted.seen
    assert (method, path, body) == ("POST", target + "/api/v1/import", b"PK")
    assert "Authorization" not in headers
    assert headers["User-Agent"] == "whylogs-songbird"


def test_an_import_waits_no_longer_than_the_read_timeout(scripted):
    scripted.script = ["hold"]
    try:
        with pytest.raises(SongbirdConnectionError) as caught:
            SongbirdClient(scripted.url, timeout=(1, 0.05)).import_bundle(io.BytesIO(b"PK"))
    finally:
        scripted.release.set()
    assert str(caught.value) == (
        f"import_bundle: could not send the bundle to {scripted.url}/api/v1/import: the connection timed out. "
        "Check that the server is up and reachable, or raise the timeout."
    )


# -- references split into batches ----------------------------------------------------------------------


def body_bytes(references: list[LogReferenceRequest]) -> int:
    """The size of the batch request's body as requests encodes it."""
    return len(json.dumps({"references": [r.to_wire() for r in references]}))


REFS = [LogReferenceRequest(alias=alias) for alias in ("a", "bé", "c" * 10, "d")]


def test_references_fitting_the_limit_exactly_are_one_batch():
    assert reference_batches(REFS, limit=body_bytes(REFS)) == [REFS]
    assert reference_batches(REFS[:1], limit=body_bytes(REFS[:1])) == [REFS[:1]]


def test_one_byte_less_moves_the_last_reference_to_a_batch_of_its_own():
    assert reference_batches(REFS, limit=body_bytes(REFS) - 1) == [REFS[:3], REFS[3:]]
    assert reference_batches(REFS[:2], limit=body_bytes(REFS[:2]) - 1) == [REFS[:1], REFS[1:2]]


def test_each_batch_after_a_split_is_measured_afresh():
    same = [LogReferenceRequest(alias=str(n)) for n in range(5)]
    assert reference_batches(same, limit=body_bytes(same[:2])) == [same[:2], same[2:4], same[4:]]
    assert reference_batches(same, limit=body_bytes(same[:1])) == [[r] for r in same]


def test_no_references_are_no_batches():
    assert reference_batches([]) == []


def test_a_batch_beyond_the_json_limit_is_sent_in_order_and_the_answers_joined():
    references = [LogReferenceRequest(alias="é" * 256) for _ in range(700)]
    [first, second] = reference_batches(references)
    answers = [
        {"references": [{"id": f"ref-{n}", "uploadUrl": f"http://u/{n}"} for n in range(len(first))]},
        {
            "references": [{"id": f"ref-{n}", "uploadUrl": f"http://u/{n}"} for n in range(len(second))],
            "observatoryUrl": "http://o/2",
        },
    ]
    client, fake = faked(response(200, answers[0]), response(200, answers[1]))
    got = client.batch_create_reference_profile_upload("session-1", references)
    assert len(got.references) == 700 and got.observatory_url == "http://o/2"
    assert [len(kwargs["json"]["references"]) for _, _, kwargs in fake.calls] == [len(first), len(second)]
    answers[0]["observatoryUrl"] = "http://o/1"
    client, fake = faked(response(200, answers[0]), response(200, answers[1]))
    assert client.batch_create_reference_profile_upload("session-1", references).observatory_url == "http://o/1"


# -- urllib3's retry warnings during our requests ----------------------------------------------------------

RETRYING = "Retrying (Retry(total=2, connect=None, read=None, redirect=None, status=None)) after %s: %s"


def during_our_request(emit: Any) -> None:
    """Run ``emit`` while one of the client's requests is under way."""
    client, fake = faked(response(200))
    answer = fake.request

    def request(method: str, url: str, **kwargs: Any) -> Any:
        emit()
        return answer(method, url, **kwargs)

    fake.request = request  # type: ignore[method-assign]
    client.upload_profile("http://127.0.0.1:9/up/1", b"x")


@pytest.fixture
def urllib3_at(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """Sets urllib3.connectionpool's level (the root logger stays at WARNING); the captured records."""

    def at(level: int) -> list[logging.LogRecord]:
        monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
        monkeypatch.setattr(logging.getLogger("urllib3"), "level", logging.NOTSET)
        monkeypatch.setattr(logging.getLogger("urllib3.connectionpool"), "level", level)
        caplog.set_level(logging.DEBUG, logger="whylogs_songbird")  # the handler takes every level
        caplog.handler.setLevel(logging.DEBUG)
        return caplog.records

    return at


def test_a_retry_warning_of_ours_becomes_a_debug_line_without_the_query(urllib3_at):
    records = urllib3_at(logging.DEBUG)
    log = logging.getLogger("urllib3.connectionpool")
    during_our_request(lambda: log.warning(RETRYING, "a broken connection", "/up/1?signature=SIG"))
    [record] = [r for r in records if r.name == "urllib3.connectionpool"]
    assert (record.levelno, record.levelname) == (logging.DEBUG, "DEBUG")
    assert record.getMessage() == RETRYING % ("a broken connection", "/up/1?<redacted>")


def test_a_retry_warning_of_ours_is_dropped_when_urllib3_debug_is_off(urllib3_at):
    records = urllib3_at(logging.INFO)
    log = logging.getLogger("urllib3.connectionpool")
    during_our_request(lambda: log.warning(RETRYING, "a broken connection", "/up/1"))
    assert [r for r in records if r.name.startswith("urllib3")] == []


def test_other_warnings_of_ours_and_retry_warnings_of_others_stay_warnings(urllib3_at):
    records = urllib3_at(logging.INFO)
    log = logging.getLogger("urllib3.connectionpool")
    during_our_request(lambda: log.warning("Connection pool is full, discarding connection: %s", "127.0.0.1"))
    log.warning(RETRYING, "a broken connection", "/other?token=T")
    assert [(r.levelname, r.getMessage()) for r in records if r.name.startswith("urllib3")] == [
        ("WARNING", "Connection pool is full, discarding connection: 127.0.0.1"),
        ("WARNING", RETRYING % ("a broken connection", "/other?token=T")),
    ]
