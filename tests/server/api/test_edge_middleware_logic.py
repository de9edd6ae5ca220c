"""The app's one middleware of its own (middleware.EdgeMiddleware) as pure logic: the order of its
steps and what each answer carries. The API and security tests check the same through a real
server; these pin down what one request cannot show (what is counted, observed and logged)."""

import asyncio
import json
import logging
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from whylogs_songbird.server import common
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.middleware import BodyTooLargeError, EdgeMiddleware, RequestCounter
from whylogs_songbird.server.security import HostAllowList, HostGate
from whylogs_songbird.server.unexpected import UNEXPECTED_MESSAGE, RepeatedErrors

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/middleware.py")


class Durations:
    """Records what the edge observes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def observe(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((scope["path"], status))


class Exchange:
    """One edge around ``app``, and what a request through it sent."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.counter = RequestCounter()
        self.durations = Durations()
        self.logger = logging.getLogger("test_edge_middleware_logic")
        self.edge = EdgeMiddleware(
            app,
            config=ServerConfig(**config),
            gate=HostGate(HostAllowList("127.0.0.1")),
            counter=self.counter,
            errors=RepeatedErrors(self.logger),
            durations=self.durations,  # type: ignore[arg-type]
        )
        self.sent: list[dict[str, Any]] = []

    def request(self, path: str = "/v0/sessions", host: bytes = b"127.0.0.1:80", body: bytes = b"{}") -> None:
        headers = [(b"host", host), (b"content-length", str(len(body)).encode())]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)

        asyncio.run(self.edge(scope, receive, send))

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def message(self) -> str:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))["message"]


async def answer_ok(scope, receive, send):
    await JSONResponse({"ok": True}, status_code=201)(scope, receive, send)


def test_an_answer_gets_the_security_headers_and_is_observed_with_its_status():
    exchange = Exchange(answer_ok)
    exchange.request()
    assert exchange.status == 201
    assert exchange.headers[b"x-content-type-options"] == b"nosniff"
    assert exchange.headers[b"cache-control"] == b"no-store"
    assert exchange.durations.seen == [("/v0/sessions", 201)]
    assert exchange.counter.in_flight == 0


def test_a_request_is_in_flight_while_the_app_answers():
    seen: list[int] = []

    async def app(scope, receive, send):
        seen.append(exchange.counter.in_flight)
        await answer_ok(scope, receive, send)

    exchange = Exchange(app)
    exchange.request()
    exchange.request()
    assert seen == [1, 1]
    assert exchange.counter.in_flight == 0


def test_an_error_before_the_answer_is_a_500_with_the_headers_logged_once(caplog):
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    exchange = Exchange(broken)
    with caplog.at_level(logging.ERROR, logger="test_edge_middleware_logic"):
        exchange.request()
    assert exchange.status == 500
    assert exchange.message == UNEXPECTED_MESSAGE
    assert exchange.headers[b"x-frame-options"] == b"DENY"
    assert exchange.durations.seen == [("/v0/sessions", 500)]
    assert [r.getMessage() for r in caplog.records] == ["unexpected error while answering a request"]
    assert exchange.counter.in_flight == 0


def test_an_error_after_the_answer_started_sends_nothing_more():
    async def half(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    exchange = Exchange(half)
    exchange.request()
    assert [m["type"] for m in exchange.sent] == ["http.response.start"]
    assert exchange.durations.seen == [("/v0/sessions", 200)]


def test_a_client_that_went_away_is_no_error(caplog):
    async def hung_up(scope, receive, send):
        raise ClientDisconnect()

    exchange = Exchange(hung_up)
    with caplog.at_level(logging.DEBUG):
        exchange.request()
    assert exchange.sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert exchange.counter.in_flight == 0


def test_a_foreign_host_gets_421_and_reaches_nothing_else():
    calls: list[str] = []

    async def app(scope, receive, send):
        calls.append(scope["path"])

    exchange = Exchange(app)
    exchange.request(host=b"evil.example")
    assert exchange.status == 421
    assert exchange.headers[b"connection"] == b"close"
    assert exchange.headers[b"referrer-policy"] == b"no-referrer"
    assert calls == []
    assert exchange.durations.seen == [("/v0/sessions", 421)]


def test_body_limits_are_checked_before_the_app():
    exchange = Exchange(answer_ok, max_json_bytes=4, max_upload_bytes=8)
    exchange.request(body=b"12345")
    assert exchange.status == 413
    assert "limit of 4 bytes; send a smaller request" in exchange.message
    assert exchange.headers[b"connection"] == b"close"
    exchange.sent.clear()
    exchange.request(path="/v0/uploads/log-1", body=b"123456789")
    assert "limit of 8 bytes; start the server with a larger max_upload_bytes" in exchange.message
    exchange.sent.clear()
    exchange.request(path="/v0/uploads/log-1", body=b"12345678")
    assert exchange.status == 201


def test_a_body_longer_than_declared_is_cut_off_at_the_limit():
    raised: list[BaseException] = []

    async def reader(scope, receive, send):
        try:
            await receive()
        except BodyTooLargeError as exc:
            raised.append(exc)
        await answer_ok(scope, receive, send)

    exchange = Exchange(reader, max_json_bytes=4)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"host", b"localhost")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"123456", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        exchange.sent.append(message)

    asyncio.run(exchange.edge(scope, receive, send))
    assert [exc.status_code for exc in raised] == [413]
    assert exchange.status == 201


def test_network_emulation_is_left_out_unless_configured_and_skips_health():
    assert Exchange(answer_ok).edge.emulation is None

    async def refuse(request):
        return JSONResponse({"message": "refused"}, status_code=503)

    exchange = Exchange(answer_ok, request_hooks=[refuse])
    exchange.request()
    assert exchange.status == 503
    assert exchange.headers[b"x-content-type-options"] == b"nosniff"
    exchange.sent.clear()
    exchange.request(path="/healthz")
    assert exchange.status == 201


def test_other_scopes_pass_with_the_original_receive_and_send():
    seen: list[tuple[Any, Any]] = []

    async def app(scope, receive, send):
        seen.append((receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        pass

    exchange = Exchange(app)
    asyncio.run(exchange.edge({"type": "lifespan"}, receive, send))
    assert seen == [(receive, send)]
    assert exchange.durations.seen == []


@pytest.mark.mutation_fast("whylogs_songbird/server/common.py")
def test_request_base_urls_are_remembered_by_what_makes_them_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(common, "_REQUEST_BASES", {})
    monkeypatch.setattr(common, "_MAX_REQUEST_BASES", 2)

    def base(host: bytes | None, root_path: str = "", scheme: str = "http") -> str:
        headers = [(b"host", host)] if host is not None else []
        scope = {"type": "http", "scheme": scheme, "server": ("127.0.0.1", 8080), "path": "/v0/x",
                 "root_path": root_path, "query_string": b"q=1", "headers": headers}  # fmt: skip
        return common.base_url(None, Request(scope))

    for _ in range(2):
        assert base(b"localhost:9") == "http://localhost:9"
        assert base(b"127.0.0.1:8080", "/songbird") == "http://127.0.0.1:8080/songbird"
        assert base(None, scheme="https") == "https://127.0.0.1:8080"
        assert base(b"[::1]:80") == "http://[::1]:80"
        assert len(common._REQUEST_BASES) <= 2
    assert common.base_url("https://songbird.example/", Request({"type": "http", "headers": []})) == (
        "https://songbird.example"
    )
