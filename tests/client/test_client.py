"""SongbirdClient against the local server over real HTTP on loopback (no HTTP mocking)."""

import logging
import socket
import threading
import time
from email.utils import formatdate
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from conftest import ANY_ORG_KEY, make_profile_bytes
from loopback import wait_until
from scripted_transport import scripted_server

from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.errors import (
    AuthError,
    ConfigError,
    SessionNotFoundError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdProtocolError,
)
from whylogs_songbird.models import LogReferenceRequest, SegmentTag


@pytest.fixture
def scripted():
    yield from scripted_server()

ORG_KEY = "testkey.secret:org-test"


@pytest.fixture
def client(server):
    with SongbirdClient(server.url, timeout=5, max_retries=1, backoff_factor=0.01) as c:
        yield c


@pytest.fixture
def waits(monkeypatch):
    """The seconds the client waits between attempts, recorded instead of slept.

    urllib3's retry waits with ``time.sleep``: in the test's own thread the call is recorded and
    returns at once (the loopback servers' threads still sleep for real).
    """
    recorded = []
    real_sleep = time.sleep
    me = threading.get_ident()

    def sleep(seconds):
        if threading.get_ident() == me:
            recorded.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return recorded


def test_all_seven_operations_round_trip(server, client):
    data = make_profile_bytes()
    session_id = client.create_session("user-1").id
    assert session_id.startswith("session-")

    meta = client.get_session(session_id, api_key=ANY_ORG_KEY).session
    assert (meta.session_id, meta.user_id, meta.model_id) == (session_id, "user-1", "model-1")
    assert client.get_session(session_id, api_key=ORG_KEY).session.user_id == ""  # not its org: no userId

    batch = client.create_dataset_profile_upload(session_id, 1_700_000_000_000, [SegmentTag(key="k", value="v")])
    client.upload_profile(batch.upload_url, data)
    assert batch.observatory_url and f"sessionToken={session_id}" in batch.observatory_url

    ref = client.create_reference_profile_upload(session_id, alias="train", dataset_timestamp=1_700_000_000_000)
    client.upload_profile(ref.upload_url, data)
    assert ref.id.startswith("ref-") and ref.alias == "train"

    refs = client.batch_create_reference_profile_upload(
        session_id, [LogReferenceRequest(alias="a"), LogReferenceRequest(alias="b")]
    )
    assert [r.alias for r in refs.references] == ["a", "b"]
    for r in refs.references:
        client.upload_profile(r.upload_url, data)

    link = client.get_session_profile_observatory_link(session_id, [1_700_000_000_000], [ref.id, refs.references[0].id])
    parts = urlsplit(link.observatory_url)
    assert parts.path == "/resources/model-1/profiles"
    query = parse_qs(parts.query)
    # references first in the combined link: the observatory compares against its first profile
    assert query["profile"] == [ref.id, refs.references[0].id, "1700000000000"]
    individual = [parse_qs(urlsplit(u).query)["profile"] for u in link.individual_observatory_urls]
    assert individual == [["1700000000000"], [ref.id], [refs.references[0].id]], "one per profile, as requested"
    assert query["sessionToken"] == [session_id]
    assert len(link.individual_observatory_urls) == 3
    assert requests.get(link.observatory_url, timeout=10).status_code == 200

    stored = [u for u in server.store.list_profiles(session_id)]
    assert len(stored) == 4 and all(server.store.read_profile_bytes(u) == data for u in stored)

    client.claim_guest_session(session_id, "org-test", api_key=ORG_KEY)
    with pytest.raises(SessionNotFoundError, match="start a new session"):
        client.create_dataset_profile_upload(session_id, 1_700_000_000_000)


def test_unknown_session_is_session_not_found(client):
    with pytest.raises(SessionNotFoundError) as info:
        client.create_reference_profile_upload("session-doesnotexistdoesnotexist", alias="x")
    assert info.value.status == 404 and info.value.operation == "create_reference_profile_upload"


def test_session_id_with_path_characters_is_refused_before_any_request(client):
    for bad in ("../etc/passwd", "session-1/upload", "a?b", ".."):
        with pytest.raises(ConfigError, match="not a valid session id"):
            client.create_dataset_profile_upload(bad, 1_700_000_000_000)


def _tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_bad_signature_and_tampered_expiry_are_refused(server, client):
    session_id = client.create_session("u").id
    slot = client.create_dataset_profile_upload(session_id, 1_700_000_000_000)
    data = make_profile_bytes()
    with pytest.raises(AuthError) as info:
        client.upload_profile(_tamper(slot.upload_url, signature="0" * 64), data)
    assert info.value.status == 403
    later = str(int(parse_qs(urlsplit(slot.upload_url).query)["expires"][0]) + 3600)
    with pytest.raises(AuthError):
        client.upload_profile(_tamper(slot.upload_url, expires=later), data)
    # The signature never shows in the error text.
    signature = parse_qs(urlsplit(slot.upload_url).query)["signature"][0]
    assert signature not in str(info.value)
    assert server.store.list_profiles(session_id) == []


def test_expired_upload_url(server_factory):
    srv = server_factory(url_ttl_seconds=1)
    client = SongbirdClient(srv.url, max_retries=0)
    session_id = client.create_session("u").id
    slot = client.create_dataset_profile_upload(session_id, 1_700_000_000_000)
    expires = int(parse_qs(urlsplit(slot.upload_url).query)["expires"][0])
    assert wait_until(lambda: time.time() > expires, timeout=5), "the URL's expiry time passed"
    with pytest.raises(AuthError, match="expired"):
        client.upload_profile(slot.upload_url, make_profile_bytes())


def test_body_that_is_not_a_profile_is_refused_and_nothing_stored(server, client):
    session_id = client.create_session("u").id
    slot = client.create_dataset_profile_upload(session_id, 1_700_000_000_000)
    with pytest.raises(SongbirdApiError) as info:
        client.upload_profile(slot.upload_url, b"this is not a whylogs profile")
    assert info.value.status == 400
    assert server.store.list_profiles(session_id) == []


def test_oversized_body_is_413(server_factory):
    srv = server_factory(max_upload_bytes=100)
    client = SongbirdClient(srv.url, max_retries=0)
    session_id = client.create_session("u").id
    slot = client.create_dataset_profile_upload(session_id, 1_700_000_000_000)
    with pytest.raises(SongbirdApiError) as info:
        client.upload_profile(slot.upload_url, make_profile_bytes())
    assert info.value.status == 413
    assert srv.store.list_profiles(session_id) == []


def test_missing_and_wrong_api_key(server):
    client = SongbirdClient(server.url, max_retries=0)
    session_id = client.create_session("u").id
    with pytest.raises(ConfigError, match="needs a WhyLabs API key"):
        client.get_session(session_id)
    with pytest.raises(AuthError) as info:
        client.get_session(session_id, api_key="wrong.key:org-test")
    assert info.value.status == 401 and "wrong.key" not in str(info.value)
    with pytest.raises(AuthError) as info:
        client.claim_guest_session(session_id, "org-other", api_key=ORG_KEY)
    assert info.value.status == 403 and "secret" not in str(info.value)


def test_api_key_not_in_repr():
    client = SongbirdClient("http://127.0.0.1:9", api_key="abc.topsecret:org-1")
    assert "topsecret" not in repr(client)


def test_four_profiles_in_a_link_request(client):
    session_id = client.create_session("u").id
    with pytest.raises(SongbirdApiError) as info:
        client.get_session_profile_observatory_link(session_id, [1, 2, 3, 4])
    assert 400 <= info.value.status < 500 and "3" in str(info.value)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8787", "ftp://127.0.0.1", "http://", "", "http://h/?q=1"])
def test_invalid_base_url(endpoint):
    with pytest.raises(ConfigError):
        SongbirdClient(endpoint)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_not_listening_is_a_typed_error_after_the_retries(waits):
    client = SongbirdClient(f"http://127.0.0.1:{_closed_port()}", timeout=1, max_retries=2, backoff_factor=0.01)
    with pytest.raises(SongbirdConnectionError, match="could not reach .* after 2 retries"):
        client.create_session("u")
    assert len(waits) == 1 and waits[0] <= 0.02 + 0.005, "the second retry waited its backoff, the first none"


HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"


def test_html_502_page_is_a_typed_readable_error(scripted):
    handler, url = scripted
    handler.script = [(502, {"Content-Type": "text/html"}, HTML_502)]
    client = SongbirdClient(url, max_retries=1, backoff_factor=0.01)
    with pytest.raises(SongbirdApiError) as info:
        client.create_session("u")
    assert info.value.status == 502
    assert "502 Bad Gateway" in str(info.value) and "<html>" not in str(info.value)
    assert len(handler.seen) == 2, "a 502 is retried"


def test_retries_503_then_succeeds_and_honours_retry_after(scripted, waits):
    handler, url = scripted
    handler.script = [
        (503, {"Retry-After": "1"}, b'{"message": "busy"}'),
        (429, {"Retry-After": "0"}, b'{"message": "slow down"}'),
        (200, {"Content-Type": "application/json"}, b'{"id": "session-abc"}'),
    ]
    client = SongbirdClient(url, max_retries=3, backoff_factor=0.01)
    assert client.create_session("u").id == "session-abc"
    assert waits[0] == 1, "Retry-After: 1 was honoured"
    assert len(handler.seen) == 3


@pytest.mark.parametrize(
    "retry_after",
    ["3600", "31", formatdate(timeval=2_000_000_000, usegmt=True)],  # seconds, or an HTTP date years ahead
)
def test_a_retry_after_above_the_cap_waits_30_seconds(scripted, waits, retry_after):
    handler, url = scripted
    handler.script = [
        (503, {"Retry-After": retry_after}, b'{"message": "come back much later"}'),
        (429, {"Retry-After": "2"}, b'{"message": "slow down"}'),
        (200, {"Content-Type": "application/json"}, b'{"id": "session-abc"}'),
    ]
    assert SongbirdClient(url, max_retries=3, backoff_factor=0.01).create_session("u").id == "session-abc"
    assert waits == [30.0, 2.0], "capped at 30 s; a wait below the cap is kept as asked"


def test_backoff_doubles_with_jitter_and_never_exceeds_10_seconds(scripted, waits):
    handler, url = scripted
    handler.script = [(503, {}, b'{"message": "busy"}')]
    factor = 0.25
    with pytest.raises(SongbirdApiError):
        SongbirdClient(url, max_retries=9, backoff_factor=factor).create_session("u")
    assert len(handler.seen) == 10
    # the first retry does not wait; retry n waits factor * 2**(n-1) plus up to factor/2 of jitter, at most 10 s
    expected = [min(10.0, factor * 2 ** (n - 1)) for n in range(2, 10)]
    assert len(waits) == len(expected), waits
    for wait, base in zip(waits, expected):
        assert base <= wait <= min(10.0, base + factor / 2), (waits, expected)
    assert waits[-1] == 10.0 and max(waits) == 10.0


def test_the_largest_backoff_setting_still_waits_at_most_10_seconds(scripted, waits, tmp_path):
    from whylogs_songbird.config import resolve_settings
    from whylogs_songbird.connect import make_client

    handler, url = scripted
    handler.script = [(503, {}, b'{"message": "busy"}')]
    client = make_client(resolve_settings({"endpoint": url, "backoff": 60, "max_retries": 4, "config_dir": tmp_path}))
    with pytest.raises(SongbirdApiError):
        client.create_session("u")
    assert len(handler.seen) == 5
    assert waits == [10.0, 10.0, 10.0]


def test_zero_retries_means_one_attempt(scripted):
    handler, url = scripted
    handler.script = [(503, {}, b'{"message": "busy"}')]
    with pytest.raises(SongbirdApiError, match="busy"):
        SongbirdClient(url, max_retries=0).create_session("u")
    assert len(handler.seen) == 1


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not JSON"),
        (b'{"id": "session-a", "trunc', "not JSON"),
        (b"<html><body>Welcome</body></html>", "not JSON"),
        (b'{"identifier": 5}', "does not match the songbird contract"),
    ],
)
def test_malformed_success_bodies_are_protocol_errors(scripted, body, words):
    handler, url = scripted
    handler.script = [(200, {"Content-Type": "application/json"}, body)]
    with pytest.raises(SongbirdProtocolError, match=words):
        SongbirdClient(url, max_retries=0).create_session("u")


def test_strict_requests_send_only_documented_fields(server, client):
    session_id = client.create_session("u").id
    # The server would ignore unknown fields; the client must not send unset optional ones.
    from whylogs_songbird.models import LogAsyncRequest, LogReferenceRequest

    assert LogAsyncRequest(dataset_timestamp=1).to_wire() == {"datasetTimestamp": 1, "segmentTags": []}
    assert LogReferenceRequest(alias="a").to_wire() == {"alias": "a"}
    assert client.create_reference_profile_upload(session_id).id.startswith("ref-")


def test_timeout_forms():
    assert SongbirdClient("http://127.0.0.1:9").timeout == (5.0, 60.0)
    assert SongbirdClient("http://127.0.0.1:9", timeout=120).timeout == (5.0, 120.0), "connect waits at most 5 s"
    assert SongbirdClient("http://127.0.0.1:9", timeout=2).timeout == (2.0, 2.0)
    assert SongbirdClient("http://127.0.0.1:9", timeout=(1, 30)).timeout == (1.0, 30.0)
    for bad in (0, -1, True, "5", (1, 2, 3), (0, 5)):
        with pytest.raises(ConfigError, match="timeout"):
            SongbirdClient("http://127.0.0.1:9", timeout=bad)


def test_a_redirect_is_not_success(scripted):
    handler, url = scripted
    handler.script = [(307, {"Location": "http://127.0.0.1:9/elsewhere?X-Amz-Signature=abc123"}, b"")]
    client = SongbirdClient(url, max_retries=0)
    with pytest.raises(SongbirdApiError) as info:
        client.upload_profile(f"{url}/bucket/key?X-Amz-Signature=abc123", b"profile bytes")
    assert info.value.status == 307 and "redirect" in str(info.value) and "abc123" not in str(info.value)
    with pytest.raises(SongbirdApiError, match="redirect"):
        client.claim_guest_session("session-abcdefabcdefabcdef", "org-1", api_key="k.s")


def test_presigned_url_secrets_never_reach_urllib3_logs(scripted, caplog):
    handler, url = scripted
    handler.script = [(503, {"Retry-After": "0"}, b"busy"), (200, {}, b"")]
    presigned = f"{url}/bucket/key?X-Amz-Credential=CRED42&X-Amz-Signature=SIG42&X-Amz-Security-Token=TOK42"
    with caplog.at_level(logging.DEBUG):
        SongbirdClient(url, max_retries=2, backoff_factor=0.01).upload_profile(presigned, b"bytes")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Retrying" in text or "bucket/key" in text, "urllib3 logged the request"
    for secret in ("CRED42", "SIG42", "TOK42"):
        assert secret not in text


def test_upload_urls_are_not_in_model_reprs():
    from whylogs_songbird.models import CreateDatasetProfileUploadResponse, LogSessionReferenceResponse

    url = "http://127.0.0.1:1/v0/uploads/log-x?expires=1&signature=SECRETSIG"
    assert "SECRETSIG" not in repr(CreateDatasetProfileUploadResponse(id="log-x", upload_url=url))
    assert "SECRETSIG" not in repr(LogSessionReferenceResponse(id="ref-x", upload_url=url))


def test_endpoint_with_credentials_is_refused():
    with pytest.raises(ConfigError, match="user name or password") as info:
        SongbirdClient("http://user:hunter2@127.0.0.1:8787")
    assert "hunter2" not in str(info.value)
