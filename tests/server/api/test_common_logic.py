"""The small helpers of server/common.py as pure logic: segment labels, observatory links, where
links start (and the memo of request base URLs), loopback hosts, per-client keys and error answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request

from whylogs_songbird.server import common
from whylogs_songbird.server.common import (
    client_key,
    error_response,
    is_loopback_host,
    observatory_link,
    segment_label,
    session_gone,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/common.py")


# -- segment labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "label"),
    [
        ([], ""),
        ([("a", "1")], "a=1"),
        ([("a", "1"), ("b", "two")], "a=1,b=two"),
        ([("", "")], "="),
        ([("k", "x,y")], 'k="x,y"'),
        ([("k=v", "1")], '"k=v"=1'),
        ([("k", 'say "hi"')], 'k="say \\"hi\\""'),
        ([("k", "back\\slash")], 'k="back\\\\slash"'),
        ([("k", 'a"b\\c')], 'k="a\\"b\\\\c"'),  # backslashes doubled first, then quotes escaped
        ([("k", "plain text; with: other|marks")], "k=plain text; with: other|marks"),
    ],
)
def test_a_segment_label_quotes_only_keys_and_values_holding_its_own_marks(tags, label):
    assert segment_label(tags) == label


def test_different_tags_never_share_a_label():
    assert segment_label([("a", "1,b=2")]) != segment_label([("a", "1"), ("b", "2")])
    assert segment_label([("a", "1,b=2")]) == 'a="1,b=2"'


# -- observatory links ------------------------------------------------------------------------


def test_an_observatory_link_names_profiles_session_and_segments_url_encoded():
    link = observatory_link("http://127.0.0.1:9", "session-abc", [1700000000000, "ref-x y"], ["a=1", 'b="x,y"'])
    assert link == (
        "http://127.0.0.1:9/resources/model-1/profiles?profile=1700000000000&profile=ref-x+y"
        "&sessionToken=session-abc&segment=a%3D1&segment=b%3D%22x%2Cy%22"
    )


def test_an_observatory_link_without_segments_or_profiles():
    assert observatory_link("https://s.test/root", "session-1", ["log-1"]) == (
        "https://s.test/root/resources/model-1/profiles?profile=log-1&sessionToken=session-1"
    )
    assert (
        observatory_link("https://s.test", "s&t", []) == "https://s.test/resources/model-1/profiles?sessionToken=s%26t"
    )


# -- where links start ------------------------------------------------------------------------


class CountingRequest(Request):
    """A request noting each time Starlette is asked for its base URL."""

    built = 0

    @property
    def base_url(self) -> Any:
        CountingRequest.built += 1
        return super().base_url


def _request(
    host: bytes | None = b"h.test:8",
    *,
    scheme: str = "http",
    server: tuple[str, int] = ("127.0.0.1", 8080),
    **extra: str,
) -> Request:
    headers = [(b"accept", b"*/*")] + ([(b"host", host)] if host is not None else [])
    scope = {"type": "http", "scheme": scheme, "server": server, "path": "/v0/x", "query_string": b"q=1",
             "headers": headers, **extra}  # fmt: skip
    return CountingRequest(scope)


@pytest.fixture
def bases(monkeypatch) -> dict[tuple[Any, ...], str]:
    """An empty memo of request base URLs, of the module's size."""
    memo: dict[tuple[Any, ...], str] = {}
    monkeypatch.setattr(common, "_REQUEST_BASES", memo)
    monkeypatch.setattr(CountingRequest, "built", 0)
    return memo


@pytest.mark.parametrize(
    ("public_url", "base"),
    [
        ("https://songbird.test", "https://songbird.test"),
        ("https://songbird.test/", "https://songbird.test"),
        ("https://songbird.test/BOX//", "https://songbird.test/BOX"),
    ],
)
def test_a_public_url_is_where_links_start_whatever_the_request(bases, public_url, base):
    assert common.base_url(public_url, _request(b"other.test")) == base
    assert bases == {} and CountingRequest.built == 0


def test_without_a_public_url_links_start_at_the_request_s_own_base(bases):
    assert common.base_url(None, _request(b"h.test:8")) == "http://h.test:8"
    assert common.base_url("", _request(b"HOSTX")) == "http://HOSTX"
    assert common.base_url(None, _request(None, server=("10.0.0.2", 81))) == "http://10.0.0.2:81"
    assert common.base_url(None, _request(b"h.test:8", root_path="/sb/BOX")) == "http://h.test:8/sb/BOX"
    assert (
        common.base_url(None, _request(b"h.test:8", app_root_path="/app", root_path="/mount")) == "http://h.test:8/app"
    )


def test_each_part_of_a_request_s_base_is_remembered_apart(bases):
    """Requests differing in one part only each get their own base, whichever came first."""
    pairs = [
        (_request(b"a.test"), "http://a.test", _request(b"b.test"), "http://b.test"),
        (_request(b"a.test"), "http://a.test", _request(b"a.test", scheme="https"), "https://a.test"),
        (_request(None), "http://127.0.0.1:8080", _request(None, server=("127.0.0.1", 9090)), "http://127.0.0.1:9090"),
        (_request(b"a.test", root_path="/r1"), "http://a.test/r1", _request(b"a.test", root_path="/r2"), "http://a.test/r2"),
        (_request(b"a.test", app_root_path="/x", root_path="/m"), "http://a.test/x",
         _request(b"a.test", app_root_path="/y", root_path="/m"), "http://a.test/y"),
        # a request without a root path is not taken for one with a root path of any text
        (_request(b"a.test"), "http://a.test", _request(b"a.test", root_path="XXXX"), "http://a.test/XXXX"),
        (_request(b"a.test", root_path=""), "http://a.test", _request(b"a.test", root_path="XXXX"), "http://a.test/XXXX"),
    ]  # fmt: skip
    for first, first_base, second, second_base in pairs:
        bases.clear()
        assert common.base_url(None, first) == first_base
        assert common.base_url(None, second) == second_base
    assert len(bases) == 2


def test_a_request_s_base_is_built_once_then_remembered(bases):
    assert common.base_url(None, _request(b"a.test", root_path="/r")) == "http://a.test/r"
    assert CountingRequest.built == 1
    assert bases == {("http", ("127.0.0.1", 8080), "/r", b"a.test"): "http://a.test/r"}
    for _ in range(3):
        assert common.base_url(None, _request(b"a.test", root_path="/r")) == "http://a.test/r"
    assert CountingRequest.built == 1


def test_the_memo_of_bases_is_emptied_when_full(bases, monkeypatch):
    monkeypatch.setattr(common, "_MAX_REQUEST_BASES", 3)
    for name in (b"a", b"b", b"c"):
        common.base_url(None, _request(name))
    assert sorted(key[3] for key in bases) == [b"a", b"b", b"c"]
    assert common.base_url(None, _request(b"d")) == "http://d"
    assert list(bases.values()) == ["http://d"]
    assert common._MAX_REQUEST_BASES == 3


def test_the_memo_holds_a_few_hundred_bases():
    assert common._MAX_REQUEST_BASES == 256


# -- loopback hosts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LocalHost",
        "localhost.",
        "localhost..",
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.254",
        "::1",
        "[::1]",
    ],
)
def test_hosts_reachable_from_this_machine_only(host):
    assert is_loopback_host(host) is True


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "[::]", "128.0.0.1", "10.0.0.1", "192.168.1.1", "2001:db8::1", "example.test",
     "localhost.example", "mylocalhost", "", "[", "127.0.0.1:80", "X::1X", "X127.0.0.1"],
)  # fmt: skip
def test_hosts_other_machines_may_reach(host):
    assert is_loopback_host(host) is False


# -- per-client keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"),
        ("2001:0db8:0000:0001:8000:0000:0000:0001", "2001:db8:0:1::/64"),
        ("::1", "::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
        ("", ""),
        ("2001:db8::1/64", "2001:db8::1/64"),
    ],
)
def test_a_client_is_its_address_or_its_ipv6_64_network(address, key):
    assert client_key(address) == key


# -- session and error answers ----------------------------------------------------------------


def test_a_gone_session_reads_the_same_whatever_the_reason_and_names_at_most_80_characters():
    assert session_gone("session-1") == (
        "Session session-1 is unknown to this server, or was claimed into an organization"
    )
    long_id = "s" * 80 + "TAIL"
    assert session_gone(long_id) == f"Session {'s' * 80} is unknown to this server, or was claimed into an organization"
    assert session_gone("s" * 80) == session_gone(long_id)


def test_an_error_answer_is_a_json_message_with_its_status_and_headers():
    answer = error_response(429, "Too many requests; retry later.", {"Retry-After": "3"})
    assert answer.status_code == 429
    assert json.loads(answer.body) == {"message": "Too many requests; retry later."}
    assert answer.headers["retry-after"] == "3"
    assert answer.headers["content-type"] == "application/json"

    plain = error_response(404, "gone")
    assert (plain.status_code, plain.body) == (404, b'{"message":"gone"}')
    assert sorted(plain.headers) == ["content-length", "content-type"]
