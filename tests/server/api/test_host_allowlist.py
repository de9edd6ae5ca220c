"""The Host allow-list and security headers (whylogs_songbird/server/security.py) as pure logic.

A web page can point a name it controls at 127.0.0.1 (DNS rebinding); the server answers only
names that are its own. Each rule of :class:`HostAllowList` gets its cases here, with the
look-alikes of each allowed name refused: ``evil-localhost``, ``localhost.evil.com``,
``127.0.0.1.evil.com``... The middleware is driven as plain ASGI with a fake app (its one seam);
``machine_names`` (the host names and interface addresses of a wildcard bind) is replaced where
a test needs a known machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from whylogs_songbird.server import security
from whylogs_songbird.server.security import (
    ALLOWED_HOST_OPTION,
    CONTENT_SECURITY_POLICY,
    HostAllowList,
    SecurityMiddleware,
    host_from_header,
    is_wildcard,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/security.py")


def verdict(allowed: HostAllowList, header: str) -> bool:
    return allowed.allows(host_from_header(header))


@pytest.fixture
def no_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bind to a single address must not ask for the machine's names."""

    def refuse() -> set[str]:
        raise AssertionError("machine_names() was called for a bind to one address")

    monkeypatch.setattr(security, "machine_names", refuse)


# -- reading the Host header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8787", "localhost"),
        ("localhost.", "localhost"),
        ("  x.LOCALHOST.:80 ", "x.localhost"),
        ("127.0.0.1:8787", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8787", "::1"),
        ("[0:0:0:0:0:0:0:1]:1", "::1"),
        ("::1", "::1"),  # unbracketed IPv6: more than one colon, so no port is split off
        ("[2001:DB8::0001]", "2001:db8::1"),
        ("[::1", "[::1"),  # no closing bracket: left as it is (and refused)
        ("example.com:443", "example.com"),
        ("evil.com:80@localhost", "evil.com"),
        ("localhost:8787:1", "localhost:8787:1"),
        ("", ""),
    ],
)
def test_host_from_header(header, host):
    assert host_from_header(header) == host


# -- the rules of a server bound to 127.0.0.1 --------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "localhost",
        "localhost:8787",
        "LOCALHOST",
        "localhost.",
        "127.0.0.1",
        "127.0.0.1:8787",
        "127.0.0.1.",
        "127.1.2.3",  # every loopback address
        "127.255.255.254:80",
        "[::1]",
        "[::1]:8787",
        "[0:0:0:0:0:0:0:1]",
        "x.localhost",  # *.localhost: browsers send it to loopback themselves
        "x.localhost.",
        "X.LocalHost:8787",
        "a.b.localhost",
        "localhost.localhost",
    ],
)
def test_loopback_names_are_answered(header, no_machine):
    assert verdict(HostAllowList("127.0.0.1"), header) is True


@pytest.mark.parametrize(
    "header",
    [
        "evil-localhost",
        "evillocalhost",
        "localhost.evil.com",
        "localhost.evil.com.",
        "x.localhost.evil.com",
        "localhostx",
        "localhost-x",
        "localhost_",
        "xlocalhost:8787",
        "127.0.0.1.evil.com",
        "127.0.0.1.nip.io",
        "2130706433",  # 127.0.0.1 as one number: not an address here
        "0x7f000001",
        "0177.0.0.1",
        "10.0.0.1",
        "192.168.1.10:8787",
        "[::2]",
        "[::1",
        "[fe80::1%lo]",
        "example.com",
        "localhost:8787:1",
        "evil.com:80@localhost",
        "",
        ":8787",
        "localhost%00",
        "local host",
    ],
)
def test_look_alikes_and_foreign_names_are_refused(header, no_machine):
    assert verdict(HostAllowList("127.0.0.1"), header) is False


def test_the_bind_address_is_answered_in_any_spelling(no_machine):
    allowed = HostAllowList("192.168.1.10")
    assert verdict(allowed, "192.168.1.10:8787") is True
    assert verdict(allowed, "192.168.1.11") is False
    assert verdict(allowed, "192.168.1.100") is False
    v6 = HostAllowList("[2001:db8::0001]")
    assert verdict(v6, "[2001:DB8:0:0::1]:8787") is True
    assert verdict(v6, "[2001:db8::2]") is False
    named = HostAllowList("Songbird.Internal.")
    assert verdict(named, "songbird.internal:8787") is True
    assert verdict(named, "songbird.internal.evil.com") is False
    assert verdict(named, "evil-songbird.internal") is False
    assert verdict(named, "x.songbird.internal") is False  # no wildcard below a bind name


def test_the_public_url_s_host_is_answered(no_machine):
    allowed = HostAllowList("127.0.0.1", public_url="https://Songbird.Example.com:8443/base/")
    assert verdict(allowed, "songbird.example.com") is True
    assert verdict(allowed, "SONGBIRD.example.com.:443") is True
    assert verdict(allowed, "example.com") is False
    assert verdict(allowed, "x.songbird.example.com") is False
    assert verdict(allowed, "songbird.example.com.evil.com") is False
    v6 = HostAllowList("127.0.0.1", public_url="http://[2001:db8::1]:80/")
    assert verdict(v6, "[2001:db8:0::1]") is True
    no_host = HostAllowList("127.0.0.1", public_url="/relative/only")
    assert no_host.names == {"localhost", "127.0.0.1"}


def test_allowed_hosts_are_added_normalized_and_star_answers_every_name(no_machine):
    allowed = HostAllowList("127.0.0.1", allowed_hosts=[" Data.Example.ORG. ", "", "   ", "[::2]"])
    assert allowed.names == {"localhost", "127.0.0.1", "data.example.org", "::2"}
    assert verdict(allowed, "data.example.org:8787") is True
    assert verdict(allowed, "[0::2]") is True
    assert verdict(allowed, "x.data.example.org") is False
    assert verdict(allowed, "data.example.org.evil.com") is False
    assert allowed.any_host is False
    every = HostAllowList("127.0.0.1", allowed_hosts=["*"])
    assert every.any_host is True and "*" not in every.names
    assert verdict(every, "anything.example.com") is True and verdict(every, "") is True
    assert repr(every) == "HostAllowList(any host)"
    assert repr(allowed) == "HostAllowList(['127.0.0.1', '::2', 'data.example.org', 'localhost'])"


WILDCARDS = [("0.0.0.0", True), ("::", True), ("[::]", True), ("", True), ("  ", True)]
SINGLE = [("127.0.0.1", False), ("::1", False), ("localhost", False), ("192.168.1.10", False), ("0.0.0.1", False)]


@pytest.mark.parametrize(("host", "wildcard"), WILDCARDS + SINGLE)
def test_is_wildcard(host, wildcard):
    assert is_wildcard(host) is wildcard


def test_a_wildcard_bind_answers_the_machine_s_names_and_addresses(monkeypatch):
    monkeypatch.setattr(security, "machine_names", lambda: {"box", "box.lan", "192.168.1.10", "fe80::1"})
    for bind in ("0.0.0.0", "::", ""):
        allowed = HostAllowList(bind)
        assert allowed.names == {"localhost", "box", "box.lan", "192.168.1.10", "fe80::1"}
        assert verdict(allowed, "BOX.lan:8787") and verdict(allowed, "[fe80::1]") and verdict(allowed, "127.0.0.1")
        assert not verdict(allowed, "box.lan.evil.com") and not verdict(allowed, "0.0.0.0")
        assert not verdict(allowed, "192.168.1.11")


def test_machine_names_are_normalized(monkeypatch):
    monkeypatch.setattr(security.socket, "gethostname", lambda: "Box.")
    monkeypatch.setattr(security.socket, "getfqdn", lambda: "")
    names = security.machine_names()
    assert "box" in names
    assert all(n == n.lower() and not n.endswith(".") and "%" not in n for n in names)


# -- the refusal and the headers ---------------------------------------------------------------------


def test_the_refusal_names_the_host_and_the_option():
    assert security.refusal_message("evil.example") == (
        "This server does not answer to the host name 'evil.example' (the request's Host header), so that no web "
        "page can reach it through a host name it controls (DNS rebinding). If you reach the server under this "
        "name, start it with --allowed-host evil.example (repeatable), or give its public address with --public-url."
    )
    assert ALLOWED_HOST_OPTION == "--allowed-host"
    long = "a" * 150
    assert f"'{'a' * 100}…'" in security.refusal_message(long) and "a" * 101 not in security.refusal_message(long)
    assert "a" * 100 in security.refusal_message("a" * 100) and "…" not in security.refusal_message("a" * 100)


class Exchange:
    """One ASGI request through the middleware: what the app saw and what was sent back."""

    def __init__(self, app_headers: list[tuple[bytes, bytes]] | None = None, raises: Exception | None = None):
        self.app_calls = 0
        self.sent: list[dict[str, Any]] = []
        self.app_headers = app_headers if app_headers is not None else [(b"content-type", b"text/plain")]
        self.raises = raises

    async def app(self, scope, receive, send):
        self.app_calls += 1
        if self.raises is not None:
            raise self.raises
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": self.app_headers})
            await send({"type": "http.response.body", "body": b"ok"})

    def run(self, allowed: HostAllowList, host: bytes | None, scope_type: str = "http") -> SecurityMiddleware:
        middleware = SecurityMiddleware(self.app, allowed)
        self.call(middleware, host, scope_type)
        return middleware

    def call(self, middleware: SecurityMiddleware, host: bytes | None, scope_type: str = "http") -> None:
        headers = [(b"host", host)] if host is not None else []
        scope = {"type": scope_type, "method": "GET", "path": "/", "headers": headers, "query_string": b""}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            self.sent.append(message)

        asyncio.run(middleware(scope, receive, send))

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


@pytest.fixture
def loopback(no_machine) -> HostAllowList:
    return HostAllowList("127.0.0.1")


def test_a_foreign_host_gets_421_and_never_reaches_the_app(loopback):
    exchange = Exchange()
    exchange.run(loopback, b"evil-localhost:8787")
    assert exchange.app_calls == 0
    assert exchange.status == 421
    assert exchange.headers[b"connection"] == b"close"
    assert exchange.headers[b"content-security-policy"] == CONTENT_SECURITY_POLICY.encode()
    body = json.loads(b"".join(m.get("body", b"") for m in exchange.sent[1:]))
    assert body == {"message": security.refusal_message("evil-localhost")}


def test_an_allowed_host_reaches_the_app_with_the_security_headers(loopback):
    exchange = Exchange()
    exchange.run(loopback, b"x.localhost:8787")
    assert (exchange.app_calls, exchange.status) == (1, 200)
    assert exchange.headers == {
        b"content-type": b"text/plain",
        b"content-security-policy": CONTENT_SECURITY_POLICY.encode(),
        b"x-content-type-options": b"nosniff",
        b"referrer-policy": b"no-referrer",
        b"x-frame-options": b"DENY",
        b"cross-origin-opener-policy": b"same-origin",
        b"cache-control": b"no-store",
    }
    assert exchange.sent[1] == {"type": "http.response.body", "body": b"ok"}


def test_headers_the_app_set_are_kept(loopback):
    exchange = Exchange(app_headers=[(b"Cache-Control", b"max-age=60"), (b"X-Frame-Options", b"SAMEORIGIN")])
    exchange.run(loopback, b"localhost")
    names = [name.lower() for name, _ in exchange.sent[0]["headers"]]
    assert names.count(b"cache-control") == 1 and names.count(b"x-frame-options") == 1
    assert exchange.headers[b"Cache-Control"] == b"max-age=60"
    assert exchange.headers[b"X-Frame-Options"] == b"SAMEORIGIN"


def test_no_host_header_and_other_scopes_pass(loopback):
    exchange = Exchange()
    exchange.run(loopback, None)  # HTTP/1.0 without Host
    assert (exchange.app_calls, exchange.status) == (1, 200)
    lifespan = Exchange()
    lifespan.run(loopback, b"evil.example", scope_type="lifespan")
    assert (lifespan.app_calls, lifespan.sent) == (1, [])


def test_a_client_gone_before_its_body_is_not_an_error(loopback):
    exchange = Exchange(raises=ClientDisconnect())
    exchange.run(loopback, b"localhost")  # does not raise
    assert exchange.app_calls == 1
    with pytest.raises(RuntimeError):
        Exchange(raises=RuntimeError("boom")).run(loopback, b"localhost")


def test_verdicts_are_remembered_per_header_and_forgotten_after_256(loopback, monkeypatch):
    exchange = Exchange()
    middleware = exchange.run(loopback, b"localhost")
    asked: list[str] = []
    real = loopback.allows

    def counting(host: str) -> bool:
        asked.append(host)
        return real(host)

    monkeypatch.setattr(loopback, "allows", counting)
    exchange.call(middleware, b"localhost")
    assert asked == []  # remembered
    for i in range(255):
        exchange.call(middleware, f"h{i}.localhost".encode())
    assert len(asked) == 255 and len(middleware._verdicts) == 256
    exchange.call(middleware, b"one-more.localhost")
    assert len(middleware._verdicts) == 1  # forgotten, then this one remembered
    exchange.call(middleware, b"localhost")
    assert asked[-1] == "localhost"
    assert all(m["status"] == 200 for m in exchange.sent if m["type"] == "http.response.start")


# -- edges of parsing, the machine's names, and the middleware's pass-through ---------------------------


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("[]:80", ""),  # brackets with nothing inside: an empty host (refused)
        ("[::1]x]", "::1"),  # the host ends at the first closing bracket
        ("[::1]]:8787", "::1"),
    ],
)
def test_host_from_header_brackets(header, host):
    assert host_from_header(header) == host


@pytest.mark.parametrize("host", ["X::", "[X0.0.0.0]", "x0.0.0.0"])
def test_a_name_that_only_looks_like_a_wildcard_address_is_not_one(host):
    assert is_wildcard(host) is False


class FakeAddress:
    def __init__(self, family: int, address: str) -> None:
        self.family, self.address = family, address


def fake_socket(hostname: str, fqdn: str) -> Any:
    import socket as real

    return type(
        "FakeSocket",
        (),
        {
            "gethostname": staticmethod(lambda: hostname),
            "getfqdn": staticmethod(lambda: fqdn),
            "AF_INET": real.AF_INET,
            "AF_INET6": real.AF_INET6,
        },
    )


def test_machine_names_are_the_host_names_and_the_ip_addresses_of_every_interface(monkeypatch):
    import socket as real
    import sys

    interfaces = {
        "lo": [FakeAddress(real.AF_INET, "127.0.0.1"), FakeAddress(real.AF_INET6, "::1")],
        "eth0": [
            FakeAddress(real.AF_INET, "192.168.1.10"),
            FakeAddress(real.AF_INET6, "FE80::0001%eth0%x"),  # zone cut at its first %
            FakeAddress(getattr(real, "AF_PACKET", 17), "00:11:22:33:44:55"),  # a link-layer address: not a name
        ],
    }
    monkeypatch.setitem(
        sys.modules, "psutil", type("FakePsutil", (), {"net_if_addrs": staticmethod(lambda: interfaces)})
    )
    monkeypatch.setattr(security, "socket", fake_socket("Box.", "box.LAN"))
    assert security.machine_names() == {"box", "box.lan", "127.0.0.1", "::1", "192.168.1.10", "fe80::1"}


def test_machine_names_without_psutil_are_the_host_names(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    monkeypatch.setattr(security, "socket", fake_socket("box", ""))
    assert security.machine_names() == {"box"}


def test_other_scopes_get_the_original_receive_and_send(loopback):
    seen: list[tuple[Any, Any]] = []

    async def app(scope, receive, send):
        seen.append((receive, send))

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    asyncio.run(SecurityMiddleware(app, loopback)({"type": "lifespan"}, receive, send))
    assert seen == [(receive, send)]


def test_an_http_request_gets_the_original_receive(loopback):
    seen: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def app(scope, receive, send):
        seen.append(receive)
        await send({"type": "http.response.start", "status": 204})  # no headers key at all
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b""}  # no headers key either
    asyncio.run(SecurityMiddleware(app, loopback)(scope, receive, send))
    assert seen == [receive]
    assert sent[0]["status"] == 204
    assert dict(sent[0]["headers"])[b"cache-control"] == b"no-store"
    assert dict(sent[0]["headers"])[b"x-content-type-options"] == b"nosniff"


def test_refusals_and_hang_ups_are_logged_at_debug_only(loopback, caplog):
    caplog.set_level(logging.DEBUG, logger="whylogs_songbird.server")
    Exchange().run(loopback, b"Evil.Example:80")
    Exchange(raises=ClientDisconnect()).run(loopback, b"localhost")
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "whylogs_songbird.server"]
    assert records == [
        (logging.DEBUG, "refused a request for host 'evil.example'"),
        (logging.DEBUG, "the client went away before its request body was read"),
    ]
    caplog.clear()
    Exchange().run(loopback, b"x" * 300)
    assert [r.getMessage() for r in caplog.records] == [f"refused a request for host {'x' * 100!r}"]
