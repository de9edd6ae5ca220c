"""SongbirdClient's own logic (client.py), fast enough for scripts/mutation to run per mutant.

Most tests swap the client's ``requests.Session`` for a fake that records each call and answers
from a script, so URLs, bodies, headers, timeouts and the mapping of answers and failures to typed
errors are checked exactly. Retries, backoff and ``Retry-After`` are urllib3's, configured by the
client: those tests talk to one small scripted HTTP server on loopback, with urllib3's sleep,
clock and jitter replaced so every wait is a known number. test_client.py checks the same client
against the real songbird server.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import ssl
import threading
from email.utils import formatdate
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import urllib3.util.retry as urllib3_retry
from client_wire import ENDPOINT, FakeHttp, accept, faked, reset, response, scripted_loopback, sent
from pydantic import model_validator
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)

from whylogs_songbird import client as C
from whylogs_songbird.client import SongbirdClient, connection_reason, is_session_not_found, request_model
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
from whylogs_songbird.models import (
    BatchLogReferenceRequest,
    CreateSessionRequest,
    LogReferenceRequest,
    SegmentTag,
    WireModel,
)

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/client.py")

HOSTED = "https://api.whylabsapp.com"
HOSTED_HINT = (
    " (https://api.whylabsapp.com is the hosted WhyLabs service, which is being wound down: remove the endpoint "
    "setting to publish to a local songbird server, started for you.)"
)
#: urllib3's clock during these tests (Retry-After dates are relative to it).
NOW = 1_700_000_000.0
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaces conftest's fixture of that name, which prepares config dirs and a local server for
    each test: the client reads no settings and starts nothing, so only the variables are removed."""
    for name in list(os.environ):
        if name.startswith("SONGBIRD_") or name in ("WHYLABS_API_ENDPOINT", "WHYLABS_API_KEY"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds urllib3 asks to sleep between attempts, recorded instead of slept; its clock
    stands at NOW and its jitter draws 0.5. No proxy or CA-bundle variables are set."""
    recorded: list[float] = []
    monkeypatch.setattr(urllib3_retry, "time", SimpleNamespace(sleep=recorded.append, time=lambda: NOW))
    monkeypatch.setattr(urllib3_retry, "random", SimpleNamespace(random=lambda: 0.5))
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return recorded


# -- the fake transport (tests/support/client_wire.py) ------------------------------------------------


def failure(call: Any, *answers: Any, **options: Any) -> SongbirdError:
    client, _ = faked(*answers, **options)
    with pytest.raises(SongbirdError) as caught:
        call(client)
    return caught.value


# -- endpoint, session id and URL checks ----------------------------------------------------------


@pytest.mark.parametrize(
    "given, kept",
    [
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("  https://songbird.example/  ", "https://songbird.example"),
        ("http://127.0.0.1:1/base//", "http://127.0.0.1:1/base"),
        ("http://127.0.0.1:1/songbirdX/", "http://127.0.0.1:1/songbirdX"),
    ],
)
def test_an_endpoint_is_kept_without_spaces_and_trailing_slashes(given, kept):
    assert C.validate_endpoint(given) == kept
    assert SongbirdClient(given).endpoint == kept


@pytest.mark.parametrize("empty", ["", "   ", None, 5])
def test_an_empty_endpoint_is_refused(empty):
    with pytest.raises(ConfigError) as caught:
        C.validate_endpoint(empty)
    assert str(caught.value) == "The songbird endpoint is empty: pass a URL such as https://api.whylabsapp.com."


@pytest.mark.parametrize("endpoint", ["http://user@127.0.0.1", "http://user:hunter2@127.0.0.1", "http://:hunter2@h"])
def test_an_endpoint_with_credentials_is_refused_without_showing_them(endpoint):
    with pytest.raises(ConfigError) as caught:
        C.validate_endpoint(endpoint)
    assert str(caught.value) == (
        "The songbird endpoint must not carry a user name or password (user:pass@host): "
        "songbird authenticates with an API key (api_key=... or SONGBIRD_API_KEY)."
    )


@pytest.mark.parametrize(
    "endpoint, shown",
    [("ftp://127.0.0.1", "'ftp://127.0.0.1'"), (" 127.0.0.1:8787 ", "'127.0.0.1:8787'"), ("http://", "'http://'")],
)
def test_an_endpoint_that_is_not_an_http_url_is_refused(endpoint, shown):
    with pytest.raises(ConfigError) as caught:
        C.validate_endpoint(endpoint)
    assert str(caught.value) == (
        f"The songbird endpoint {shown} is not an http(s) URL: give the full URL with its scheme, "
        "e.g. http://127.0.0.1:8737 or https://api.whylabsapp.com."
    )


@pytest.mark.parametrize(
    "endpoint, shown",
    [
        ("http://127.0.0.1:1/p?token=abc", "http://127.0.0.1:1/p"),
        ("https://127.0.0.1:1/p#abc", "https://127.0.0.1:1/p"),
    ],
)
def test_an_endpoint_with_a_query_or_fragment_is_refused_without_showing_it(endpoint, shown):
    with pytest.raises(ConfigError) as caught:
        C.validate_endpoint(endpoint)
    assert str(caught.value) == f"The songbird endpoint '{shown}' must not carry a query string or fragment."


def test_redact_url_drops_the_query_and_fragment():
    url = "http://127.0.0.1:1/v0/uploads/log-1?expires=1&signature=abc#frag"
    assert C.redact_url(url) == "http://127.0.0.1:1/v0/uploads/log-1"


@pytest.mark.parametrize("session_id", ["session-abc_1.2~3", "s" * 200, "a"])
def test_a_session_id_of_allowed_characters_is_kept(session_id):
    assert C.validate_session_id(session_id) == session_id


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a?b", "a b", "é", "s" * 201, "a\n", 5, None])
def test_a_session_id_that_could_change_the_path_is_refused(bad):
    with pytest.raises(ConfigError) as caught:
        C.validate_session_id(bad)
    assert str(caught.value) == (
        f"{bad!r} is not a valid session id: session ids look like 'session-<random>' "
        "and hold only letters, digits and '-', '_', '.', '~'."
    )


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout, pair",
    [
        (None, (5.0, 60.0)),
        (120, (5.0, 120.0)),
        (2, (2.0, 2.0)),
        (0.5, (0.5, 0.5)),
        (5.0, (5.0, 5.0)),
        ((1, 30), (1.0, 30.0)),
        ([3, 4], (3.0, 4.0)),
        ((0.25, 1), (0.25, 1.0)),
    ],
)
def test_timeout_forms(timeout, pair):
    got = SongbirdClient(ENDPOINT, timeout=timeout).timeout
    assert got == pair and [type(t) for t in got] == [float, float]


@pytest.mark.parametrize("bad", [0, -1, True, "5", (1, 2, 3), (1,), (), (0, 5), (5, 0), (5, -1), (True, 5), (1, "2")])
def test_bad_timeouts_are_refused(bad):
    with pytest.raises(ConfigError) as caught:
        SongbirdClient(ENDPOINT, timeout=bad)
    assert str(caught.value) == (
        f"timeout must be a positive number of seconds or a (connect, read) pair, not {bad!r}."
    )


def test_negative_retries_are_refused_and_zero_is_allowed():
    with pytest.raises(ConfigError) as caught:
        SongbirdClient(ENDPOINT, max_retries=-1)
    assert str(caught.value) == "max_retries must be 0 or more, not -1."
    assert SongbirdClient(ENDPOINT, max_retries=0).max_retries == 0


def test_repr_shows_the_endpoint_and_retries_but_never_the_key():
    assert repr(SongbirdClient(ENDPOINT)) == "SongbirdClient('http://127.0.0.1:9', max_retries=3)"
    keyed = SongbirdClient(ENDPOINT, api_key="abc.topsecret:org-1", max_retries=1)
    assert repr(keyed) == "SongbirdClient('http://127.0.0.1:9', api_key=***, max_retries=1)"
    assert repr(SongbirdClient(ENDPOINT, api_key="")) == "SongbirdClient('http://127.0.0.1:9', max_retries=3)"


def test_one_pooled_adapter_serves_http_and_https():
    client = SongbirdClient(ENDPOINT)
    adapter = client._http.get_adapter("http://127.0.0.1:1/")
    assert client._http.get_adapter("https://127.0.0.1:1/") is adapter
    assert (adapter._pool_connections, adapter._pool_maxsize) == (16, 16)
    small = SongbirdClient(ENDPOINT, pool_size=3)._http.get_adapter("https://127.0.0.1:1/")
    assert (small._pool_connections, small._pool_maxsize) == (3, 3)


def test_the_log_filter_is_installed_once_on_the_urllib3_loggers_that_name_urls(monkeypatch):
    names = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection", "urllib3.poolmanager")
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    monkeypatch.setattr(C, "_FILTER_INSTALLED", False)
    SongbirdClient(ENDPOINT)
    SongbirdClient(ENDPOINT)
    for name in names:
        assert [type(f).__name__ for f in logging.getLogger(name).filters] == ["_RedactQueries"]


def test_the_client_is_a_context_manager_that_closes_its_session():
    client, fake = faked()
    with client as entered:
        assert entered is client
        assert fake.closed is False
    assert fake.closed is True


# -- the seven operations, as sent ---------------------------------------------------------------


def test_create_session():
    client, fake = faked(response(200, {"id": "session-1"}))
    assert client.create_session("user-1").id == "session-1"
    assert fake.calls == [
        ("POST", ENDPOINT + "/v0/sessions", sent(json={"userId": "user-1"}, headers=accept(), params=None))
    ]


def test_get_session_sends_the_key_given_or_the_clients():
    meta = {"session": {"sessionId": "session-1", "orgId": "org-1", "modelId": "model-1", "userId": "u"}}
    client, fake = faked(response(200, meta), response(200, meta), api_key="client.key")
    got = client.get_session("session-1").session
    assert (got.session_id, got.org_id, got.model_id, got.user_id) == ("session-1", "org-1", "model-1", "u")
    client.get_session("session-1", api_key="call.key")
    url = ENDPOINT + "/v0/sessions/session-1"
    assert fake.calls == [
        ("GET", url, sent(json=None, headers=accept(**{"X-API-Key": "client.key"}), params=None)),
        ("GET", url, sent(json=None, headers=accept(**{"X-API-Key": "call.key"}), params=None)),
    ]


@pytest.mark.parametrize("key", [None, ""])
def test_an_operation_that_needs_a_key_refuses_to_run_without_one(key):
    client, fake = faked(api_key=key)
    for call in (
        lambda: client.get_session("session-1"),
        lambda: client.claim_guest_session("session-1", "org-1", api_key=""),
    ):
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value) == (
            "This operation needs a WhyLabs API key: pass api_key=..., or set SONGBIRD_API_KEY."
        )
    assert fake.calls == []


def test_create_dataset_profile_upload():
    answer = {"id": "log-1", "uploadUrl": "http://127.0.0.1:9/up/log-1?signature=s", "observatoryUrl": "http://o"}
    client, fake = faked(response(200, answer), response(200, answer))
    slot = client.create_dataset_profile_upload("session-1", 1_700_000_000_000, [SegmentTag(key="k", value="v")], "eu")
    assert (slot.id, slot.upload_url, slot.observatory_url) == ("log-1", answer["uploadUrl"], "http://o")
    client.create_dataset_profile_upload("session-1", 5)
    url = ENDPOINT + "/v0/sessions/session-1/upload"
    assert fake.calls == [
        (
            "POST",
            url,
            sent(
                json={
                    "datasetTimestamp": 1_700_000_000_000,
                    "segmentTags": [{"key": "k", "value": "v"}],
                    "region": "eu",
                },
                headers=accept(),
                params=None,
            ),
        ),
        ("POST", url, sent(json={"datasetTimestamp": 5, "segmentTags": []}, headers=accept(), params=None)),
    ]


def test_create_reference_profile_upload():
    answer = {"id": "ref-1", "uploadUrl": "http://127.0.0.1:9/up/ref-1", "alias": "train"}
    client, fake = faked(response(200, answer), response(200, answer))
    ref = client.create_reference_profile_upload("session-1", alias="train", dataset_timestamp=7, region="us")
    assert (ref.id, ref.alias) == ("ref-1", "train")
    client.create_reference_profile_upload("session-1")
    url = ENDPOINT + "/v0/sessions/session-1/reference"
    assert fake.calls == [
        (
            "POST",
            url,
            sent(json={"alias": "train", "datasetTimestamp": 7, "region": "us"}, headers=accept(), params=None),
        ),
        ("POST", url, sent(json={}, headers=accept(), params=None)),
    ]


def test_batch_create_reference_profile_upload():
    refs = [{"id": "ref-a", "uploadUrl": "http://127.0.0.1:9/a"}, {"id": "ref-b", "uploadUrl": "http://127.0.0.1:9/b"}]
    client, fake = faked(response(200, {"references": refs}))
    got = client.batch_create_reference_profile_upload(
        "session-1", [LogReferenceRequest(alias="a"), LogReferenceRequest(alias="b")]
    )
    assert [r.id for r in got.references] == ["ref-a", "ref-b"]
    assert fake.calls == [
        (
            "POST",
            ENDPOINT + "/v0/sessions/session-1/references",
            sent(json={"references": [{"alias": "a"}, {"alias": "b"}]}, headers=accept(), params=None),
        )
    ]


def test_a_batch_answer_with_the_wrong_number_of_urls_is_a_protocol_error():
    answer = {"references": [{"id": "ref-a", "uploadUrl": "http://127.0.0.1:9/a"}]}
    error = failure(
        lambda c: c.batch_create_reference_profile_upload(
            "session-1", [LogReferenceRequest(alias="a"), LogReferenceRequest(alias="b")]
        ),
        response(200, answer),
    )
    assert type(error) is SongbirdProtocolError
    assert str(error) == (
        "batch_create_reference_profile_upload asked for 2 upload URLs but the server answered with 1."
    )


def test_get_session_profile_observatory_link():
    answer = {"observatoryUrl": "http://o/all", "individualObservatoryUrls": ["http://o/1"]}
    client, fake = faked(response(200, answer), response(200, {"observatoryUrl": "http://o/none"}))
    link = client.get_session_profile_observatory_link("session-1", [1_700_000_000_000], ["ref-1"])
    assert (link.observatory_url, link.individual_observatory_urls) == ("http://o/all", ["http://o/1"])
    client.get_session_profile_observatory_link("session-1")
    url = ENDPOINT + "/v0/sessions/observatory-link/session-1"
    assert fake.calls == [
        (
            "POST",
            url,
            sent(
                json={"batchProfileTimestamps": [1_700_000_000_000], "referenceProfileIds": ["ref-1"]},
                headers=accept(),
                params=None,
            ),
        ),
        (
            "POST",
            url,
            sent(json={"batchProfileTimestamps": [], "referenceProfileIds": []}, headers=accept(), params=None),
        ),
    ]


def test_claim_guest_session():
    client, fake = faked(response(204), response(200, b"{}"), api_key="client.key")
    assert client.claim_guest_session("session-1", "org-1", api_key="k.s") is None
    assert client.claim_guest_session("session-1", "org-2") is None
    url = ENDPOINT + "/v0/sessions/session-1/claim"
    assert fake.calls == [
        ("POST", url, sent(json=None, headers=accept(**{"X-API-Key": "k.s"}), params={"org_id": "org-1"})),
        ("POST", url, sent(json=None, headers=accept(**{"X-API-Key": "client.key"}), params={"org_id": "org-2"})),
    ]


@pytest.mark.parametrize("org", ["", None, 5])
def test_a_claim_without_an_organization_is_refused(org):
    client, fake = faked()
    with pytest.raises(ConfigError) as caught:
        client.claim_guest_session("session-1", org, api_key="k.s")
    assert str(caught.value) == "claim_guest_session needs the id of the organization to claim the session into."
    assert fake.calls == []


def test_a_bad_session_id_is_refused_by_every_operation_before_anything_is_sent():
    client, fake = faked(api_key="k.s")
    for call in (
        lambda: client.get_session("a/b"),
        lambda: client.create_dataset_profile_upload("a/b", 1),
        lambda: client.create_reference_profile_upload("a/b"),
        lambda: client.batch_create_reference_profile_upload("a/b", [LogReferenceRequest(alias="a")]),
        lambda: client.get_session_profile_observatory_link("a/b"),
        lambda: client.claim_guest_session("a/b", "org-1"),
    ):
        with pytest.raises(ConfigError, match="^'a/b' is not a valid session id"):
            call()
    assert fake.calls == []


def test_a_request_breaking_the_limits_is_refused_before_sending():
    client, fake = faked()
    with pytest.raises(RequestLimitError) as caught:
        client.create_session("u" * 257)
    assert str(caught.value) == (
        "Nothing was sent: the CreateSessionRequest breaks the songbird API's rules "
        "(user_id: String should have at most 256 characters). Shorten the values or send fewer items per request."
    )
    assert fake.calls == []


def test_a_refused_request_names_at_most_five_problems():
    with pytest.raises(RequestLimitError) as caught:
        request_model(BatchLogReferenceRequest, references=[{"alias": "a" * 257}] * 6)
    problem = "String should have at most 256 characters"
    assert str(caught.value) == (
        "Nothing was sent: the BatchLogReferenceRequest breaks the songbird API's rules ("
        + "; ".join(f"references.{i}.alias: {problem}" for i in range(5))
        + "). Shorten the values or send fewer items per request."
    )
    assert request_model(CreateSessionRequest, user_id="u").user_id == "u"


class Ordered(WireModel):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> Ordered:
        if self.low > self.high:
            raise ValueError("low is above high")
        return self


def test_a_problem_with_the_whole_request_is_named_body():
    with pytest.raises(RequestLimitError) as caught:
        request_model(Ordered, low=2, high=1)
    assert str(caught.value) == (
        "Nothing was sent: the Ordered breaks the songbird API's rules (body: Value error, low is above high). "
        "Shorten the values or send fewer items per request."
    )


# -- the presigned PUT ---------------------------------------------------------------------------

UPLOAD_URL = "http://127.0.0.1:9/up/log-1?expires=1&signature=SECRETSIG"


@pytest.mark.parametrize("status", [200, 201, 299])
def test_upload_profile_puts_the_bytes_and_says_when_they_were_a_duplicate(status):
    client, fake = faked(
        response(status), response(status, headers={"X-Songbird-Duplicate-Of": " log-0 "}), response(status)
    )
    fake.answers[2].headers["X-Songbird-Duplicate-Of"] = "  "
    assert client.upload_profile(UPLOAD_URL, b"profile") is None
    assert client.upload_profile(UPLOAD_URL, b"profile") == "log-0"
    assert client.upload_profile(UPLOAD_URL, b"profile") is None
    put = ("PUT", UPLOAD_URL, sent(data=b"profile", headers={"Content-Type": "application/octet-stream"}))
    assert fake.calls == [put, put, put]


def test_an_https_upload_url_is_accepted():
    client, fake = faked(response(200))
    assert client.upload_profile("https://127.0.0.1:9/up/1", b"p") is None
    assert [(method, url) for method, url, _ in fake.calls] == [("PUT", "https://127.0.0.1:9/up/1")]


@pytest.mark.parametrize(
    "url, shown", [("ftp://127.0.0.1:9/up?signature=SECRETSIG", "ftp://127.0.0.1:9/up"), ("http:///up", "http:///up")]
)
def test_an_upload_url_that_is_not_http_is_a_protocol_error(url, shown):
    error = failure(lambda c: c.upload_profile(url, b"x"))
    assert type(error) is SongbirdProtocolError
    assert str(error) == f"The server gave an upload URL that is not http(s): {shown!r}."


# -- answers that are not success --------------------------------------------------------------


def create(c: SongbirdClient) -> Any:
    return c.create_session("u")


def upload(c: SongbirdClient) -> Any:
    return c.upload_profile(UPLOAD_URL, b"x")


def slot(c: SongbirdClient) -> Any:
    return c.create_dataset_profile_upload("session-1", 5)


@pytest.mark.parametrize(
    "call, status, body, kind, message",
    [
        (
            create,
            400,
            {"message": "userId is required."},
            SongbirdApiError,
            "create_session: the server answered 400: userId is required.",
        ),
        (create, 422, b"", SongbirdApiError, "create_session: the server answered 422."),
        (
            create,
            401,
            {"message": "no key"},
            AuthError,
            "create_session: the server answered 401: no key. Pass a valid API key (api_key=... or SONGBIRD_API_KEY).",
        ),
        (
            create,
            403,
            {"message": "Key not valid for org-x. "},
            AuthError,
            "create_session: the server answered 403: Key not valid for org-x. Check the API key (SONGBIRD_API_KEY) "
            "and that it belongs to the organization you named.",
        ),
        (
            upload,
            403,
            {"message": "Signature mismatch"},
            AuthError,
            "upload_profile: the server answered 403: Signature mismatch. The upload URL was refused "
            "(expired or invalid signature): ask for a new upload URL.",
        ),
        (
            upload,
            401,
            {"message": "no"},
            AuthError,
            "upload_profile: the server answered 401: no. Pass a valid API key (api_key=... or SONGBIRD_API_KEY).",
        ),
        (
            upload,
            404,
            {"message": "Unknown upload slot"},
            SongbirdApiError,
            "upload_profile: the server answered 404: Unknown upload slot.",
        ),
        (
            upload,
            413,
            {"message": "Payload too large: limit LZX"},
            SongbirdApiError,
            "upload_profile: the server answered 413: Payload too large: limit LZX.",
        ),
        (upload, 410, {"message": "gone"}, SongbirdApiError, "upload_profile: the server answered 410: gone."),
        (
            create,
            404,
            {"detail": "Not Found"},
            SongbirdApiError,
            "create_session: the server answered 404: Not Found. Check that the endpoint is a songbird API.",
        ),
        (
            create,
            410,
            {"message": "session expired"},
            SongbirdApiError,
            "create_session: the server answered 410: session expired.",
        ),
        (
            slot,
            404,
            {"message": "Session not found."},
            SessionNotFoundError,
            "create_dataset_profile_upload: the server answered 404: Session not found. "
            "The session is unknown, expired or claimed: start a new session.",
        ),
        (
            slot,
            410,
            b"",
            SessionNotFoundError,
            "create_dataset_profile_upload: the server answered 410. "
            "The session is unknown, expired or claimed: start a new session.",
        ),
        (
            slot,
            400,
            {"message": "Session Expired"},
            SessionNotFoundError,
            "create_dataset_profile_upload: the server answered 400: Session Expired. "
            "The session is unknown, expired or claimed: start a new session.",
        ),
        (
            slot,
            400,
            {"message": "datasetTimestamp: bad session field"},
            SongbirdApiError,
            "create_dataset_profile_upload: the server answered 400: datasetTimestamp: bad session field.",
        ),
        (
            create,
            429,
            {"message": "slow down"},
            SongbirdApiError,
            "create_session: the server answered 429: slow down. The server is rate limiting, after 3 retries: "
            "try again later.",
        ),
        (
            create,
            500,
            {"message": "boom"},
            SongbirdApiError,
            "create_session: the server answered 500: boom. The server failed, after 3 retries: try again later.",
        ),
        (
            create,
            504,
            b"",
            SongbirdApiError,
            "create_session: the server answered 504. The server failed, after 3 retries: try again later.",
        ),
        (
            create,
            501,
            {"message": "nope"},
            SongbirdApiError,
            "create_session: the server answered 501: nope. The server does not support this request: "
            "check that the endpoint is a songbird API.",
        ),
        (create, 499, {"message": "closed"}, SongbirdApiError, "create_session: the server answered 499: closed."),
    ],
)
def test_each_status_is_a_typed_error_with_its_advice(call, status, body, kind, message):
    error = failure(call, response(status, body))
    assert type(error) is kind
    assert str(error) == message
    assert error.status == status
    assert error.operation == message.split(":")[0]
    said = body.get("message", body.get("detail")) if isinstance(body, dict) else ""
    assert error.server_message == said


@pytest.mark.parametrize(
    "call, operation",
    [
        (lambda c: c.get_session("session-1", api_key="k.s"), "get_session"),
        (slot, "create_dataset_profile_upload"),
        (lambda c: c.create_reference_profile_upload("session-1"), "create_reference_profile_upload"),
        (
            lambda c: c.batch_create_reference_profile_upload("session-1", [LogReferenceRequest(alias="a")]),
            "batch_create_reference_profile_upload",
        ),
        (lambda c: c.get_session_profile_observatory_link("session-1"), "get_session_profile_observatory_link"),
        (lambda c: c.claim_guest_session("session-1", "org-1", api_key="k.s"), "claim_guest_session"),
    ],
)
@pytest.mark.parametrize("status", [404, 410])
def test_every_operation_naming_a_session_says_when_it_is_gone(call, operation, status):
    error = failure(call, response(status, {"message": "gone"}))
    assert type(error) is SessionNotFoundError
    assert str(error) == (
        f"{operation}: the server answered {status}: gone. "
        "The session is unknown, expired or claimed: start a new session."
    )
    assert (error.status, error.operation, error.server_message) == (status, operation, "gone")


@pytest.mark.parametrize(
    "operation, status, message, gone",
    [
        ("get_session", 404, "", True),
        ("claim_guest_session", 410, "", True),
        ("create_session", 404, "", False),
        ("upload_profile", 410, "session expired", False),
        ("get_session", 400, "The session has EXPIRED", True),
        ("get_session", 400, "Session not found", True),
        ("get_session", 400, "no such session", True),
        ("get_session", 400, "malformed session body", False),
        ("get_session", 400, "not found", False),
        ("get_session", 422, "session expired", False),
        ("get_session", 401, "session expired", False),
        ("get_session", 400, "", False),
    ],
)
def test_is_session_not_found(operation, status, message, gone):
    assert is_session_not_found(operation, status, message) is gone


def test_is_session_not_found_without_a_message():
    assert is_session_not_found("get_session", 400) is False
    assert is_session_not_found("get_session", 410) is True


@pytest.mark.parametrize(
    "status, headers, where",
    [
        (307, {"Location": "http://127.0.0.1:9/elsewhere?X-Amz-Signature=abc123"}, "http://127.0.0.1:9/elsewhere"),
        (300, {}, "nowhere"),
        (308, {"Location": ""}, "nowhere"),
    ],
)
def test_a_redirect_is_not_followed_and_is_not_success(status, headers, where):
    error = failure(create, response(status, b"", headers))
    assert type(error) is SongbirdApiError
    assert str(error) == (
        f"create_session: the server answered {status}, a redirect to {where}, which is not followed: "
        "nothing was stored or changed. Use the final URL as the endpoint (e.g. https, or without a path)."
    )
    assert error.status == status


@pytest.mark.parametrize("status", [199, 300])
def test_only_2xx_is_success(status):
    assert type(failure(create, response(status, {"id": "session-1"}))) is SongbirdApiError
    assert type(failure(upload, response(status))) is SongbirdApiError


def test_without_retries_the_advice_does_not_mention_them():
    assert str(failure(create, response(429, {"message": "slow"}), max_retries=0)) == (
        "create_session: the server answered 429: slow. The server is rate limiting: try again later."
    )
    assert str(failure(create, response(503, b""), max_retries=0)) == (
        "create_session: the server answered 503. The server failed: try again later."
    )
    assert str(failure(create, response(502, b""), max_retries=1)) == (
        "create_session: the server answered 502. The server failed, after 1 retries: try again later."
    )


@pytest.mark.parametrize(
    "status, body, message",
    [
        (
            401,
            {"message": "no"},
            "create_session: the server answered 401: no. Pass a valid API key "
            "(api_key=... or SONGBIRD_API_KEY)." + HOSTED_HINT,
        ),
        (
            403,
            {"message": "no"},
            "create_session: the server answered 403: no. Check the API key "
            "(SONGBIRD_API_KEY) and that it belongs to the organization you named." + HOSTED_HINT,
        ),
        (
            404,
            {"message": "Not Found"},
            "create_session: the server answered 404: Not Found. "
            "Check that the endpoint is a songbird API." + HOSTED_HINT,
        ),
        (
            501,
            b"",
            "create_session: the server answered 501. The server does not support this request: "
            "check that the endpoint is a songbird API." + HOSTED_HINT,
        ),
        (503, b"", "create_session: the server answered 503. The server failed, after 3 retries: try again later."),
    ],
)
def test_the_hosted_endpoint_gets_a_hint_where_it_could_be_the_cause(status, body, message):
    assert str(failure(create, response(status, body), endpoint=HOSTED + "/")) == message


# -- excerpts of a server's body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, headers, excerpt",
    [
        ({"message": "busy"}, {}, "busy"),
        ({"detail": "bad field"}, {}, "bad field"),
        ({"error": "oops"}, {}, "oops"),
        ({"error": "e", "detail": "d", "message": "m"}, {}, "m"),
        ({"error": "e", "detail": "d"}, {}, "d"),
        ({"message": "", "detail": 5, "error": "third"}, {}, "third"),
        ({"message": "m" * 600}, {}, "m" * 500),
        ({"code": 7}, {}, '{"code": 7}'),
        ({"k": "x" * 400}, {}, '{"k": "' + "x" * 293),
        ([1, 2], {}, "[1, 2]"),
        (b"  plain   words\n here ", {}, "plain words here"),
        (b"w" * 400, {}, "w" * 300),
        (b"", {}, ""),
        (
            b'<html><TITLE lang="en">502\n Bad &amp;  Gateway</TITLE><title>2</title></html>',
            {},
            "an HTML page: 502 Bad & Gateway",
        ),
        (b"<p>Service<b>down</b> &amp; out</p>", {}, "an HTML page: Service down & out"),
        (b"Gateway<i>timeout</i>", {"Content-Type": "text/html; charset=utf-8"}, "an HTML page: Gateway timeout"),
        (b"Gateway<i>timeout</i>", {"Content-Type": "text/plain"}, "Gateway<i>timeout</i>"),
        (b"\n  <div> </div>", {}, "an HTML page"),
        (b"<title>" + b"T" * 250 + b"</title>", {}, "an HTML page: " + "T" * 200),
    ],
)
def test_excerpt_of_a_body(body, headers, excerpt):
    assert C._excerpt(response(500, body, headers)) == excerpt


def test_a_success_that_is_not_json_is_a_protocol_error_with_an_excerpt():
    page = response(200, b"<html><title>Welcome</title></html>", {"Content-Type": "text/html"})
    error = failure(create, page)
    assert type(error) is SongbirdProtocolError
    assert str(error) == (
        "create_session: the server at http://127.0.0.1:9 answered 200 with a body that is not JSON "
        "(an HTML page: Welcome); check that the endpoint is a songbird API."
    )
    assert str(failure(create, response(201, b""))) == (
        "create_session: the server at http://127.0.0.1:9 answered 201 with a body that is not JSON "
        "(empty); check that the endpoint is a songbird API."
    )


@pytest.mark.parametrize(
    "call, body, problems",
    [
        (create, {"identifier": 5}, "id: Field required"),
        (create, [], "body: Input should be a valid dictionary or instance of CreateSessionResponse"),
        (
            lambda c: c.batch_create_reference_profile_upload("session-1", [LogReferenceRequest(alias="a")]),
            {"references": [{}, {}, {}]},
            "references.0.id: Field required; references.0.uploadUrl: Field required; references.1.id: Field "
            "required; references.1.uploadUrl: Field required; references.2.id: Field required",
        ),
    ],
)
def test_a_success_not_matching_the_contract_is_a_protocol_error(call, body, problems):
    error = failure(call, response(200, body))
    assert type(error) is SongbirdProtocolError
    operation = "create_session" if call is create else "batch_create_reference_profile_upload"
    assert str(error) == f"{operation}: the server's answer does not match the songbird contract ({problems})."


# -- failures to connect -----------------------------------------------------------------------------


class Refusal(Exception):
    """Not an OSError, but carrying errno ECONNREFUSED."""

    errno = errno.ECONNREFUSED


class QuietNameResolution(NameResolutionError):
    def __str__(self) -> str:
        return "dns"


def caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


RESOLVE = ("the host name was not resolved", "check the host name in the endpoint")
PLAIN = ("TLS (https) was spoken to a port that speaks plain HTTP", "use http:// instead of https:// in the endpoint")
TLS = ("the TLS (https) handshake failed", "check the endpoint's certificate, or use http:// for a local server")
REFUSED = ("the connection was refused (nothing listens there)", "check that the server is running and the port")
TIMED_OUT = ("the connection timed out", "check that the server is up and reachable, or raise the timeout")
CLOSED = ("the server closed the connection", "check the server and any proxy in between")
FAILED = ("the connection failed", "check that the server is running and the endpoint is right")


@pytest.mark.parametrize(
    "error, reason",
    [
        (QuietNameResolution("h", None, OSError("x")), RESOLVE),
        (OSError("[Errno -2] Name or service not known"), RESOLVE),
        (OSError("Nodename nor servname provided"), RESOLVE),
        (OSError("Failed to resolve 'h'"), RESOLVE),
        (OSError("Getaddrinfo failed"), RESOLVE),
        (ssl.SSLError("bad"), TLS),
        (OSError("SSL handshake broke"), TLS),
        (OSError("SSL: Wrong Version Number"), PLAIN),
        (ssl.SSLError("Record layer failure"), PLAIN),
        (OSError("ssl: Unknown Protocol"), PLAIN),
        (OSError("wrong version number"), FAILED),
        (ConnectionRefusedError(), REFUSED),
        (Refusal(), REFUSED),
        (Exception("Connection Refused"), REFUSED),
        (caused(Exception("Connection"), Exception("refused")), REFUSED),
        (ConnectTimeoutError("x"), TIMED_OUT),
        (ReadTimeoutError(None, "/u", "slow"), TIMED_OUT),
        (TimeoutError(), TIMED_OUT),
        (Exception("Read Timed Out"), TIMED_OUT),
        (NewConnectionError(None, "Failed to establish a new connection"), FAILED),
        (Exception("Connection Reset By Peer"), CLOSED),
        (Exception("Remote end closed connection without response"), CLOSED),
        (Exception("('Connection aborted.', x)"), CLOSED),
        (Exception("something else"), FAILED),
    ],
)
def test_connection_reason(error, reason):
    assert connection_reason(error) == reason


def test_the_reason_is_found_in_arguments_reasons_causes_and_contexts():
    wrapped = requests.exceptions.ConnectionError(MaxRetryError(None, "/x", reason=ConnectionRefusedError()))
    assert connection_reason(wrapped) == REFUSED
    assert connection_reason(caused(Exception("outer"), TimeoutError())) == TIMED_OUT
    with_context = Exception("outer")
    with_context.__context__ = ConnectionRefusedError()
    assert connection_reason(with_context) == REFUSED
    assert connection_reason(Exception(ConnectionRefusedError())) == REFUSED


def test_a_link_reached_twice_does_not_hide_the_links_behind_it():
    inner = caused(OSError("inner"), ConnectionRefusedError())
    outer = caused(Exception("outer"), inner)
    outer.__context__ = inner  # "raise ... from inner" inside "except inner": cause and context agree
    assert connection_reason(outer) == REFUSED


def test_the_chain_is_followed_once_per_exception_and_at_most_21_deep():
    first, second = Exception("a"), Exception("b")
    first.__context__, second.__context__ = second, first
    assert C._chain(first) == [first, second]
    links = [Exception(str(n)) for n in range(30)]
    for outer, inner in zip(links, links[1:]):
        outer.__cause__ = inner
    assert C._chain(links[0]) == links[:21]


def send_failure(exc: BaseException, call: Any = create, **options: Any) -> str:
    error = failure(call, exc, **options)
    assert type(error) is SongbirdConnectionError
    return str(error)


def test_a_connect_timeout_says_which_limit():
    message = send_failure(requests.exceptions.ConnectTimeout("x"), timeout=(1.5, 30))
    assert message == (
        "create_session: http://127.0.0.1:9/v0/sessions timed out: it did not connect in time "
        "(limits 1.5 s to connect, 30 s to answer, after 3 retries). Check that the server is up, or raise the timeout."
    )


def test_a_read_timeout_says_which_limit():
    message = send_failure(requests.exceptions.ReadTimeout("x"), max_retries=0)
    assert message == (
        "create_session: http://127.0.0.1:9/v0/sessions timed out: it did not answer in time "
        "(limits 5 s to connect, 60 s to answer). Check that the server is up, or raise the timeout."
    )


def test_a_connection_error_names_the_reason_and_what_to_do_without_the_signature():
    refused = requests.exceptions.ConnectionError(MaxRetryError(None, "/x", reason=ConnectionRefusedError()))
    assert send_failure(refused, upload) == (
        "upload_profile: could not reach http://127.0.0.1:9/up/log-1: the connection was refused "
        "(nothing listens there), after 3 retries. Check that the server is running and the port."
    )
    assert send_failure(requests.exceptions.ConnectionError("x"), max_retries=0) == (
        "create_session: could not reach http://127.0.0.1:9/v0/sessions: the connection failed. "
        "Check that the server is running and the endpoint is right."
    )
    assert send_failure(requests.exceptions.ConnectionError("x"), endpoint=HOSTED) == (
        "create_session: could not reach https://api.whylabsapp.com/v0/sessions: the connection failed, "
        "after 3 retries. Check that the server is running and the endpoint is right." + HOSTED_HINT
    )


def test_an_answer_broken_off_and_other_request_failures():
    assert send_failure(requests.exceptions.ChunkedEncodingError("x")) == (
        "create_session: the answer from http://127.0.0.1:9/v0/sessions broke off before its end "
        "(the connection closed mid-answer). Try again; if it keeps happening, check the server or any proxy "
        "in between."
    )
    assert send_failure(requests.exceptions.InvalidHeader("x"), upload) == (
        "upload_profile: request to http://127.0.0.1:9/up/log-1 failed (InvalidHeader)."
    )


# -- prepare, logging, environment ------------------------------------------------------------------


def test_prepare_runs_once_before_the_first_request_and_again_after_a_connection_error():
    seen: list[int] = []
    client, fake = faked(
        response(200, {"id": "s"}),
        requests.exceptions.ConnectionError("x"),
        response(200, {"id": "s"}),
        response(200, {"id": "s"}),
        prepare=lambda: seen.append(len(fake.calls)),
    )
    assert seen == []
    client.create_session("u")
    with pytest.raises(SongbirdConnectionError):
        client.create_session("u")
    client.create_session("u")
    client.create_session("u")
    assert seen == [0, 2]


class CountingLock:
    """A lock that counts how often it was taken."""

    def __init__(self) -> None:
        self.lock, self.taken = threading.Lock(), 0

    def __enter__(self) -> Any:
        self.taken += 1
        return self.lock.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.lock.__exit__(*exc)


def test_without_prepare_requests_never_take_the_prepare_lock():
    client, fake = faked(requests.exceptions.ConnectionError("x"), response(200, {"id": "s"}))
    client._prepare_lock = lock = CountingLock()  # type: ignore[assignment]
    with pytest.raises(SongbirdConnectionError):
        client.create_session("u")
    assert client.create_session("u").id == "s"
    assert lock.taken == 0


def test_threads_racing_to_the_first_request_prepare_once():
    calls: list[str] = []
    waiting = threading.Event()

    def prepare() -> None:
        calls.append(threading.current_thread().name)
        second.start()
        assert waiting.wait(10)

    client, fake = faked(response(200, {"id": "s"}), response(200, {"id": "s"}), prepare=prepare)
    real_lock = client._prepare_lock

    class Signalling:
        def __enter__(self) -> Any:
            if threading.current_thread() is second:
                waiting.set()  # the second thread has seen "not prepared" and now waits for the lock
            return real_lock.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            return real_lock.__exit__(*exc)

    client._prepare_lock = Signalling()  # type: ignore[assignment]
    second = threading.Thread(target=client.create_session, args=("u",), name="second")
    client.create_session("u")
    second.join(10)
    assert calls == [threading.current_thread().name]
    assert len(fake.calls) == 2


def test_each_request_is_logged_without_its_query(caplog):
    client, _ = faked(response(200))
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.client"):
        client.upload_profile(UPLOAD_URL, b"x")
    assert [r.getMessage() for r in caplog.records if r.name == "whylogs_songbird.client"] == [
        "songbird upload_profile: PUT http://127.0.0.1:9/up/log-1"
    ]


URLLIB3_LINE = (
    '%s://%s:%s "%s %s %s" %s %s',
    ("http", "127.0.0.1", 9, "PUT", "/up/log-1?signature=SIG", "HTTP/1.1", 200, 0),
)


def emit_urllib3_lines() -> None:
    logging.getLogger("urllib3.connectionpool").debug(*URLLIB3_LINE[:1], *URLLIB3_LINE[1])
    logging.getLogger("urllib3.util.retry").debug("Incremented Retry for (url='/up/log-1?sig=1&x=2'): total=2")
    logging.getLogger("urllib3.connectionpool").debug('Quoted "/a?b=1" then /c?d=2 rest')
    logging.getLogger("urllib3.connectionpool").debug("No query %s", "here")


REDACTED = [
    'http://127.0.0.1:9 "PUT /up/log-1?<redacted> HTTP/1.1" 200 0',
    "Incremented Retry for (url='/up/log-1?<redacted>'): total=2",
    'Quoted "/a?<redacted>" then /c?<redacted> rest',
    "No query here",
]
UNREDACTED = [
    'http://127.0.0.1:9 "PUT /up/log-1?signature=SIG HTTP/1.1" 200 0',
    "Incremented Retry for (url='/up/log-1?sig=1&x=2'): total=2",
    'Quoted "/a?b=1" then /c?d=2 rest',
    "No query here",
]


def urllib3_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]


def test_urllib3_lines_of_our_requests_lose_their_queries_and_others_keep_them(caplog):
    client, fake = faked(response(200), requests.exceptions.ConnectionError("x"))
    from_other_thread: list[None] = []

    def during_request(method: str, url: str, **kwargs: Any) -> requests.Response:
        emit_urllib3_lines()
        other = threading.Thread(target=lambda: from_other_thread.append(emit_urllib3_lines()))
        other.start()
        other.join()
        return FakeHttp.request(fake, method, url, **kwargs)

    fake.request = during_request  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="urllib3"):
        client.upload_profile(UPLOAD_URL, b"x")
        assert urllib3_messages(caplog) == REDACTED + UNREDACTED  # ours, then another thread's
        caplog.clear()
        with pytest.raises(SongbirdConnectionError):
            client.upload_profile(UPLOAD_URL, b"x")
        caplog.clear()
        emit_urllib3_lines()  # after our requests, even a failed one
        assert urllib3_messages(caplog) == UNREDACTED


def test_proxy_and_ca_settings_are_read_from_the_environment_once_per_origin(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/songbird-ca.pem")
    client, fake = faked(response(200), response(200), response(200), endpoint="http://localhost:9")
    client.upload_profile("http://localhost:9/up/1", b"x")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3129")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client.upload_profile("http://localhost:9/up/2?sig=1", b"x")
    client.upload_profile("http://127.0.0.1:9/up/3", b"x")
    [first, second, third] = [call[2] for call in fake.calls]
    assert (first["proxies"], first["verify"]) == ({"http": "http://127.0.0.1:3128"}, "/etc/songbird-ca.pem")
    assert second == first, "the same origin: read once"
    assert (third["proxies"], third["verify"]) == ({}, "/etc/songbird-ca.pem")


def test_no_proxy_is_honoured_for_a_named_host_with_a_port(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    client, fake = faked(response(200), endpoint="http://localhost:9")
    client.upload_profile("http://localhost:9/up/1", b"x")
    assert fake.calls[0][2]["proxies"] == {}


# -- retries and backoff, through urllib3, against a scripted loopback server ---------------------------


@pytest.fixture(scope="module")
def loopback() -> Any:
    with scripted_loopback() as httpd:
        yield httpd


@pytest.fixture
def scripted(loopback: Any) -> SimpleNamespace:
    """The loopback server's state, reset: ``script``, ``seen`` requests, ``connections``, ``url``."""
    return reset(loopback)


BUSY = (503, {}, b'{"message": "busy"}')
SESSION = (200, {"Content-Type": "application/json"}, b'{"id": "session-1"}')


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_these_statuses_are_retried_at_once_then_with_backoff(scripted, waits, status):
    scripted.script = [(status, {}, b"{}"), (status, {}, b"{}"), SESSION]
    assert SongbirdClient(scripted.url).create_session("u").id == "session-1"
    assert len(scripted.seen) == 3
    assert waits == [0.5625], "the first retry does not wait; the second waits 0.25 * 2 + 0.5 * 0.125"


@pytest.mark.parametrize("status", [400, 404, 413, 501, 505])
def test_other_statuses_are_not_retried(scripted, waits, status):
    scripted.script = [(status, {}, b"{}"), SESSION]
    with pytest.raises(SongbirdApiError) as caught:
        SongbirdClient(scripted.url).create_session("u")
    assert caught.value.status == status
    assert len(scripted.seen) == 1 and waits == []


def test_get_post_and_put_are_all_retried(scripted):
    meta = b'{"session": {"sessionId": "session-1", "orgId": "o", "modelId": "m", "userId": "u"}}'
    scripted.script = [BUSY, (200, {}, meta), BUSY, (200, {}, b""), BUSY, (200, {}, b"")]
    client = SongbirdClient(scripted.url, api_key="k.s")
    assert client.get_session("session-1").session.org_id == "o"
    client.claim_guest_session("session-1", "org-1")
    client.upload_profile(scripted.url + "/up/1?signature=s", b"profile")
    assert [(method, path) for method, path, _, _ in scripted.seen] == [
        ("GET", "/v0/sessions/session-1"),
        ("GET", "/v0/sessions/session-1"),
        ("POST", "/v0/sessions/session-1/claim?org_id=org-1"),
        ("POST", "/v0/sessions/session-1/claim?org_id=org-1"),
        ("PUT", "/up/1?signature=s"),
        ("PUT", "/up/1?signature=s"),
    ]


def test_backoff_doubles_and_stops_growing_at_10_seconds(scripted, waits):
    scripted.script = [BUSY]
    with pytest.raises(SongbirdApiError) as caught:
        SongbirdClient(scripted.url, max_retries=9).create_session("u")
    assert str(caught.value) == (
        "create_session: the server answered 503: busy. The server failed, after 9 retries: try again later."
    )
    assert len(scripted.seen) == 10
    assert waits == [0.5625, 1.0625, 2.0625, 4.0625, 8.0625, 10.0, 10.0, 10.0]


def test_backoff_factor_and_jitter_follow_the_setting(scripted, waits):
    scripted.script = [BUSY, BUSY, BUSY, SESSION]
    assert SongbirdClient(scripted.url, backoff_factor=1).create_session("u").id == "session-1"
    assert waits == [2.25, 4.25], "1 * 2**(n-1) plus half of the jitter of 0.5"


@pytest.mark.parametrize(
    "retry_after, wait",
    [
        ("7", 7.0),
        ("30", 30.0),
        ("31", 30.0),
        ("3600", 30.0),
        (formatdate(NOW + 12, usegmt=True), 12.0),
        (formatdate(NOW + 3600, usegmt=True), 30.0),
    ],
)
def test_retry_after_is_honoured_up_to_30_seconds(scripted, waits, retry_after, wait):
    scripted.script = [(503, {"Retry-After": retry_after}, b"{}"), SESSION]
    assert SongbirdClient(scripted.url).create_session("u").id == "session-1"
    assert waits == [wait]
    assert C._Retry().parse_retry_after(retry_after) == wait


def test_the_last_answer_is_reported_when_retries_run_out(scripted):
    scripted.script = [BUSY]
    with pytest.raises(SongbirdApiError) as caught:
        SongbirdClient(scripted.url, max_retries=1).create_session("u")
    assert caught.value.status == 503 and len(scripted.seen) == 2


def test_zero_retries_means_one_attempt(scripted, waits):
    scripted.script = [BUSY, SESSION]
    with pytest.raises(SongbirdApiError):
        SongbirdClient(scripted.url, max_retries=0).create_session("u")
    assert len(scripted.seen) == 1 and waits == []


def test_a_dropped_connection_is_retried(scripted):
    scripted.script = ["drop", SESSION]
    assert SongbirdClient(scripted.url, max_retries=1).create_session("u").id == "session-1"
    assert len(scripted.seen) == 2


def test_retries_of_every_kind_share_one_budget(scripted):
    scripted.script = ["drop", BUSY, SESSION]
    with pytest.raises(SongbirdApiError) as caught:
        SongbirdClient(scripted.url, max_retries=1).create_session("u")
    assert caught.value.status == 503 and len(scripted.seen) == 2


def test_tls_spoken_to_plain_http_is_not_retried(scripted, waits):
    scripted.script = [SESSION]
    with pytest.raises(SongbirdConnectionError) as caught:
        # a timeout below the default 60 s, in case the handshake ever waited for an answer
        SongbirdClient(f"https://127.0.0.1:{scripted.port}", timeout=5).create_session("u")
    assert str(caught.value) == (
        f"create_session: could not reach https://127.0.0.1:{scripted.port}/v0/sessions: TLS (https) was spoken "
        "to a port that speaks plain HTTP, after 3 retries. Use http:// instead of https:// in the endpoint."
    )
    assert scripted.connections == 1 and waits == []


def test_the_request_headers_on_the_wire(scripted, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    scripted.script = [SESSION, (200, {}, b"")]
    client = SongbirdClient(scripted.url)
    client.create_session("u")
    client.upload_profile(scripted.url + "/up/1", b"profile bytes")
    [(_, _, posted, body), (_, _, put, data)] = scripted.seen
    assert (posted["User-Agent"], posted["Accept"], posted["Content-Type"]) == (
        "whylogs-songbird",
        "application/json",
        "application/json",
    )
    assert json.loads(body) == {"userId": "u"}
    assert (put["User-Agent"], put["Content-Type"], data) == (
        "whylogs-songbird",
        "application/octet-stream",
        b"profile bytes",
    )
    assert "Authorization" not in posted and "Authorization" not in put, ".netrc is never consulted"
