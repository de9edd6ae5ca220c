"""The server's HTTP edge as pure logic: the transport that joins a response's writes into one
socket write, and the Host check's remembered verdicts. test_server_defences.py checks the same code
through real connections; these tests pin down what a connection cannot show (how many writes
reach the socket, when, and how many verdicts are kept)."""

import asyncio

import pytest

from whylogs_songbird.server import security
from whylogs_songbird.server.connections import CoalescingTransport
from whylogs_songbird.server.security import HostAllowList, SecurityMiddleware

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/connections.py", "whylogs_songbird/server/security.py")


class FakeTransport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused += 1

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def run(coroutine):
    return asyncio.run(coroutine)


def coalescing() -> tuple[FakeTransport, CoalescingTransport]:
    """A fake socket and the coalescing transport over it (inside a running loop)."""
    raw = FakeTransport()
    return raw, CoalescingTransport(raw, asyncio.get_running_loop())


def test_the_writes_of_one_turn_reach_the_socket_as_one():
    async def scenario():
        raw, transport = coalescing()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"")
        transport.write(bytearray(b"{}"))
        assert raw.writes == [], "nothing is written before the turn ends"
        await asyncio.sleep(0)
        return raw.writes

    assert run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_flush_writes_at_once_and_the_scheduled_flush_then_writes_nothing_more():
    async def scenario():
        raw, transport = coalescing()
        transport.write(b"head")
        transport.write(b"body")
        transport.flush()  # the protocol's call when a response is complete
        first = list(raw.writes)
        await asyncio.sleep(0)
        transport.flush()
        return first, raw.writes

    first, after = run(scenario())
    assert first == [b"headbody"]
    assert after == [b"headbody"]


def test_a_streamed_response_goes_out_turn_by_turn():
    async def scenario():
        raw, transport = coalescing()
        seen = []
        for chunk in (b"one", b"two", b"three"):
            transport.write(chunk)
            await asyncio.sleep(0)
            seen.append(list(raw.writes))
        return seen

    assert run(scenario()) == [[b"one"], [b"one", b"two"], [b"one", b"two", b"three"]]


def test_close_sends_what_is_pending_first_and_nothing_goes_to_a_closed_socket():
    async def scenario():
        raw, transport = coalescing()
        transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        transport.close()
        transport.write(b"late")
        await asyncio.sleep(0)
        return raw

    raw = run(scenario())
    assert raw.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]
    assert raw.closed


def test_everything_else_is_the_wrapped_transport():
    async def scenario():
        raw, transport = coalescing()
        transport.pause_reading()
        return raw.paused, transport.get_extra_info("peername"), transport.is_closing()

    assert run(scenario()) == (1, ("127.0.0.1", 5000), False)


async def _answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]})
    await send({"type": "http.response.body", "body": b"ok"})


def call(middleware, host: bytes):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", host)]}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"])


def test_host_verdicts_are_remembered_up_to_a_bound_and_stay_right(monkeypatch):
    monkeypatch.setattr(security, "_HOST_VERDICTS", 4)
    middleware = SecurityMiddleware(_answer, HostAllowList("127.0.0.1"))
    for round_ in range(3):
        for index in range(6):
            assert call(middleware, f"127.0.0.{index + 1}:8080".encode())[0] == 200, (round_, index)
            assert call(middleware, f"evil{index}.example:8080".encode())[0] == 421, (round_, index)
            assert len(middleware._verdicts) <= 4
    status, headers = call(middleware, b"[::1]:8080")
    assert status == 200
    assert headers[b"cache-control"] == b"max-age=60", "a route's own caching is kept"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"referrer-policy"] == b"no-referrer"


@pytest.mark.parametrize("host", [b"LOCALHOST:8080", b"localhost.", b"127.1.2.3"])
def test_spellings_of_loopback_names_are_answered(host):
    middleware = SecurityMiddleware(_answer, HostAllowList("127.0.0.1"))
    status, headers = call(middleware, host)
    assert status == 200
    assert headers[b"cache-control"] == b"max-age=60"
