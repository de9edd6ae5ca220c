"""Reading a session's timeline over HTTP (whylogs_songbird/timeline_client.py): the request it
sends, and what each kind of answer becomes.

The server is a plain ``http.server`` on a loopback port that records each request and answers
what the test sets; the expected URLs, queries and messages are written out by hand.
"""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests
from conftest import http_server_thread

from whylogs_songbird import background_server, timeline_client
from whylogs_songbird.errors import SongbirdApiError, SongbirdConnectionError, SongbirdProtocolError
from whylogs_songbird.timeline_client import (
    dataset_timeline_url,
    fetch_dataset_timeline,
    fetch_timeline,
    timeline_frame,
    timeline_url,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/timeline_client.py")

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DAY = 86_400_000
DOCUMENT = {
    "granularity": "day",
    "buckets": [{"start": T0, "end": T0 + DAY, "profiles": 2}],
    "columns": {"a": {"count": [7], "drift_category": ["NO_DRIFT"]}},
}


class Answer:
    """What the fake server answers next, and the requests (path with query) it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = json.dumps(DOCUMENT).encode()
        self.requests: list[str] = []
        self.keys: list[str | None] = []  # the X-API-Key header of each request


@pytest.fixture
def fake() -> Iterator[tuple[str, Answer]]:
    answer = Answer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            answer.requests.append(self.path)
            answer.keys.append(self.headers.get("X-API-Key"))
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server_thread(Handler) as url:
        yield url, answer


def test_the_url_quotes_the_session_and_drops_a_trailing_slash():
    assert timeline_url("http://127.0.0.1:9/", "session-a") == "http://127.0.0.1:9/api/v1/sessions/session-a/timeline"
    assert timeline_url("http://127.0.0.1:9/x//", "a/b c") == "http://127.0.0.1:9/x/api/v1/sessions/a%2Fb%20c/timeline"
    assert timeline_url("http://127.0.0.1:9/X/", "X") == "http://127.0.0.1:9/X/api/v1/sessions/X/timeline"


def test_the_document_is_returned_as_the_server_sent_it(fake):
    url, answer = fake
    assert fetch_timeline("session-a", endpoint=url) == DOCUMENT
    assert answer.requests == ["/api/v1/sessions/session-a/timeline"]
    assert answer.keys == [None]  # a session's timeline is read without a key


def test_every_option_given_is_a_query_parameter(fake):
    url, answer = fake
    fetch_timeline(
        "session-a",
        endpoint=url + "/",
        granularity="week",
        reference="train ing",
        segment="region=eu",
        start=T0,
        end="2026-02-01T00:00:00Z",
    )
    assert answer.requests == [
        "/api/v1/sessions/session-a/timeline?granularity=week&reference=train+ing&segment=region%3Deu"
        f"&start={T0}&end=2026-02-01T00%3A00%3A00Z"
    ]


def test_empty_options_are_left_out_but_zero_is_sent(fake):
    url, answer = fake
    fetch_timeline("session-a", endpoint=url, granularity="", reference=None, segment="", start=0, end=None)
    assert answer.requests == ["/api/v1/sessions/session-a/timeline?start=0"]


def test_an_error_answer_carries_the_server_s_message(fake):
    url, answer = fake
    answer.status = 400
    answer.body = json.dumps({"message": "unknown reference 'x': the session's references: train"}).encode()
    with pytest.raises(SongbirdApiError) as caught:
        fetch_timeline("session-a", endpoint=url)
    error = caught.value
    assert str(error) == (
        "the timeline of session-a could not be read: HTTP 400 unknown reference 'x': the session's references: train"
    )
    assert (error.status, error.operation, error.server_message) == (
        400,
        "get_timeline",
        "unknown reference 'x': the session's references: train",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", ""),
        (b'{"message": null}', ""),
        (b'{"message": ""}', ""),
        (b"[1]", ""),  # JSON but not an object: no message either
    ],
)
def test_an_error_answer_without_a_message_names_only_the_status(fake, body, message):
    url, answer = fake
    answer.status = 404
    answer.body = body
    with pytest.raises(SongbirdApiError) as caught:
        fetch_timeline("session-a", endpoint=url)
    assert str(caught.value) == "the timeline of session-a could not be read: HTTP 404"
    assert (caught.value.status, caught.value.server_message) == (404, "")


def test_an_error_answer_that_is_not_json_is_quoted_up_to_200_characters(fake):
    url, answer = fake
    answer.status = 502
    answer.body = ("x" * 199 + "yz").encode()
    with pytest.raises(SongbirdApiError) as caught:
        fetch_timeline("session-a", endpoint=url)
    assert caught.value.server_message == "x" * 199 + "y"
    assert str(caught.value) == "the timeline of session-a could not be read: HTTP 502 " + "x" * 199 + "y"


def test_a_2xx_other_than_200_is_an_error(fake):
    url, answer = fake
    answer.status = 202
    with pytest.raises(SongbirdApiError) as caught:
        fetch_timeline("session-a", endpoint=url)
    assert caught.value.status == 202


def test_an_answer_that_is_not_json_is_a_protocol_error(fake):
    url, answer = fake
    answer.body = b"<html>hello</html>"
    with pytest.raises(SongbirdProtocolError) as caught:
        fetch_timeline("session-a", endpoint=url)
    assert str(caught.value) == f"{url} answered the timeline request with something that is not JSON"


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"columns": {}}, {"buckets": []}, {"bucket": [], "columns": {}}, {"buckets": [], "column": {}}],
)
def test_an_answer_without_buckets_and_columns_is_a_protocol_error(fake, body):
    url, answer = fake
    answer.body = json.dumps(body).encode()
    with pytest.raises(SongbirdProtocolError) as caught:
        fetch_timeline("session-a", endpoint=url)
    assert str(caught.value) == f"{url} answered the timeline request without buckets and columns"


def test_the_smallest_document_with_buckets_and_columns_is_accepted(fake):
    url, answer = fake
    answer.body = b'{"buckets": [], "columns": {}}'
    assert fetch_timeline("session-a", endpoint=url) == {"buckets": [], "columns": {}}


#: A session's and a dataset's timeline fetch, each with the name its errors give.
FETCHES = {
    "session": ("session-a", lambda **options: fetch_timeline("session-a", **options)),
    "dataset": ("org-1/model-a", lambda **options: fetch_dataset_timeline("org-1", "model-a", api_key=KEY, **options)),
}


@pytest.mark.parametrize("kind", FETCHES)
def test_an_unreachable_server_is_a_connection_error_naming_the_timeline_and_never_the_key(kind):
    from conftest import free_port

    name, fetch = FETCHES[kind]
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SongbirdConnectionError) as caught:
        fetch(endpoint=endpoint, timeout=2)
    assert str(caught.value) == (
        f"the timeline of {name} could not be fetched from {endpoint} (ConnectionError); "
        "check that the server is up (songbird serve) and the endpoint is right"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("kind", FETCHES)
def test_the_timeout_bounds_the_connect_at_5_seconds(fake, monkeypatch, kind):
    url, _ = fake
    seen: list[Any] = []
    real_get = requests.get

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["timeout"])
        return real_get(*args, **kwargs)

    monkeypatch.setattr(timeline_client.requests, "get", spy)
    fetch = FETCHES[kind][1]
    for timeout in (30, 2.5, 5):
        fetch(endpoint=url, timeout=timeout)
    assert seen == [(5.0, 30.0), (2.5, 2.5), (5.0, 5.0)]


def test_without_endpoint_the_local_server_is_ensured_and_asked(fake, monkeypatch):
    url, answer = fake
    monkeypatch.setenv("SONGBIRD_LOCAL_PORT", url.rsplit(":", 1)[1])
    ensured: list[Any] = []
    monkeypatch.setattr(background_server, "ensure_server", ensured.append)
    assert fetch_timeline("session-a") == DOCUMENT
    assert [(s.embedded, s.endpoint) for s in ensured] == [(True, url)]
    assert answer.requests == ["/api/v1/sessions/session-a/timeline"]
    ensured.clear()
    fetch_timeline("session-a", endpoint=url)
    assert ensured == []


def test_the_frame_has_a_row_per_bucket_and_column_and_passes_every_option(fake):
    url, answer = fake
    frame = timeline_frame(url, "session-a", granularity="day", reference="r", segment="s=1", start=1, end=2, timeout=3)
    assert answer.requests == [
        "/api/v1/sessions/session-a/timeline?granularity=day&reference=r&segment=s%3D1&start=1&end=2"
    ]
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["start"], row["column"], row["count"], row["drift_category"], row["profiles"]) == (
        pd.Timestamp("2026-01-01", tz="UTC"),
        "a",
        7,
        "NO_DRIFT",
        2,
    )


def test_the_frame_s_timeout_is_the_one_given(fake, monkeypatch):
    url, _ = fake
    seen: list[Any] = []
    real_get = requests.get

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["timeout"])
        return real_get(*args, **kwargs)

    monkeypatch.setattr(timeline_client.requests, "get", spy)
    timeline_frame(url, "session-a", timeout=3)
    assert seen == [(3.0, 3.0)]


# -- an organization's dataset ---------------------------------------------------------------------

KEY = "sbk-0123456789abcdef.secret-part"


def test_the_dataset_url_quotes_organization_and_dataset_and_drops_a_trailing_slash():
    assert (
        dataset_timeline_url("http://127.0.0.1:9/", "org-1", "model-a")
        == "http://127.0.0.1:9/api/v1/organizations/org-1/datasets/model-a/timeline"
    )
    assert (
        dataset_timeline_url("http://127.0.0.1:9/x//", "o/1 2", "d?#/")
        == "http://127.0.0.1:9/x/api/v1/organizations/o%2F1%202/datasets/d%3F%23%2F/timeline"
    )
    assert (  # only slashes are cut from the endpoint
        dataset_timeline_url("http://127.0.0.1:9/X/", "X", "X")
        == "http://127.0.0.1:9/X/api/v1/organizations/X/datasets/X/timeline"
    )


def test_a_dataset_timeline_is_read_with_the_key_and_every_option(fake):
    url, answer = fake
    document = fetch_dataset_timeline(
        "org-1",
        "model a",
        api_key=KEY,
        endpoint=url + "/",
        granularity="month",
        reference="train",
        segment="region=eu",
        start=T0,
        end="2026-02-01",
        timeout=4,
    )
    assert document == DOCUMENT
    assert answer.requests == [
        "/api/v1/organizations/org-1/datasets/model%20a/timeline?granularity=month&reference=train"
        f"&segment=region%3Deu&start={T0}&end=2026-02-01"
    ]
    assert answer.keys == [KEY]
    fetch_dataset_timeline("org-1", "model-a", api_key=KEY, endpoint=url, granularity="", start=0)
    assert answer.requests[1] == "/api/v1/organizations/org-1/datasets/model-a/timeline?start=0"


def test_a_refused_dataset_timeline_names_the_dataset_and_never_the_key(fake):
    url, answer = fake
    answer.status = 403
    answer.body = json.dumps({"message": "this key belongs to another organization"}).encode()
    with pytest.raises(SongbirdApiError) as caught:
        fetch_dataset_timeline("org-1", "model-a", api_key=KEY, endpoint=url)
    assert str(caught.value) == (
        "the timeline of org-1/model-a could not be read: HTTP 403 this key belongs to another organization"
    )
    assert (caught.value.status, caught.value.operation) == (403, "get_timeline")
    assert KEY not in str(caught.value) and "secret" not in repr(caught.value)


def test_a_dataset_timeline_without_endpoint_asks_the_local_server(fake, monkeypatch):
    url, answer = fake
    monkeypatch.setenv("SONGBIRD_LOCAL_PORT", url.rsplit(":", 1)[1])
    ensured: list[Any] = []
    monkeypatch.setattr(background_server, "ensure_server", ensured.append)
    assert fetch_dataset_timeline("org-1", "model-a", api_key=KEY) == DOCUMENT
    assert [(s.embedded, s.endpoint) for s in ensured] == [(True, url)]
    assert (answer.requests, answer.keys) == (["/api/v1/organizations/org-1/datasets/model-a/timeline"], [KEY])
