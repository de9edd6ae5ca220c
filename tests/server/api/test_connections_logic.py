"""Defences against slow and idle connections (whylogs_songbird/server/connections.py) as logic.

The connection cap and its defaults are arithmetic on the descriptor limit, tried at their
bounds. The protocol is uvicorn's real httptools protocol, driven by hand: a fake socket (the
transport, the module's seam) records what is written and whether it was closed, and an event
loop records the timers armed, so a timeout is fired by calling what the timer would call,
with no waiting. test_hardening.py checks the same code through real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from whylogs_songbird.server import connections
from whylogs_songbird.server.connections import (
    RATE_LIMITED_LOGGERS,
    ConnectionLimits,
    GuardedHttpToolsProtocol,
    RateLimitFilter,
    backlog_for,
    default_max_connections,
    descriptor_limit,
    guarded_protocol,
    install_log_rate_limit,
    uvicorn_options,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/connections.py")


# -- the descriptor arithmetic -------------------------------------------------------------------


def test_the_constants():
    assert connections.RESERVED_DESCRIPTORS == 64
    assert (connections.MIN_CONNECTIONS, connections.MAX_DEFAULT_CONNECTIONS) == (8, 1024)
    assert (connections.DEFAULT_HEADER_TIMEOUT, connections.DEFAULT_BODY_TIMEOUT) == (10.0, 30.0)
    assert connections.MAX_BACKLOG == 2048


@pytest.mark.parametrize(("soft", "limit"), [(1024, 1024), (7, 7), ("infinity", 65536)])
def test_the_descriptor_limit_is_the_soft_limit(monkeypatch, soft, limit):
    import resource

    infinity = resource.RLIM_INFINITY
    fake = SimpleNamespace(
        RLIMIT_NOFILE=resource.RLIMIT_NOFILE,
        RLIM_INFINITY=infinity,
        getrlimit=lambda which: (
            (infinity if soft == "infinity" else soft, infinity) if which == resource.RLIMIT_NOFILE else (0, 0)
        ),
    )
    monkeypatch.setattr(connections, "resource", fake)
    assert descriptor_limit() == limit
    assert isinstance(descriptor_limit(), int)


@pytest.mark.parametrize(
    ("limit", "cap"),
    [
        (1024, 480),  # (1024 - 64) // 2
        (1025, 480),
        (1026, 481),
        (80, 8),  # 8 exactly
        (81, 8),
        (82, 9),
        (10, 8),  # never fewer than 8
        (2112, 1024),  # 1024 exactly
        (2114, 1024),  # never more than 1024
        (1_000_000, 1024),
    ],
)
def test_the_default_cap_is_half_of_the_descriptors_left_within_bounds(limit, cap):
    assert default_max_connections(limit) == cap


def test_the_default_cap_reads_the_process_limit(monkeypatch):
    monkeypatch.setattr(connections, "descriptor_limit", lambda: 1024)
    assert default_max_connections() == 480
    assert backlog_for(100) == (1024 - 64 - 100) // 4


@pytest.mark.parametrize(
    ("max_connections", "limit", "backlog"),
    [
        (480, 1024, 120),  # (1024 - 64 - 480) // 4
        (480, 1027, 120),
        (480, 1028, 121),
        (8, 104, 8),  # 8 exactly
        (8, 107, 8),
        (8, 108, 9),
        (1000, 100, 8),  # never fewer than 8
        (1024, 9280, 2048),  # 2048 exactly
        (1024, 9284, 2048),  # never more than 2048
    ],
)
def test_the_backlog_is_a_quarter_of_the_descriptors_left_within_bounds(max_connections, limit, backlog):
    assert backlog_for(max_connections, limit) == backlog


# -- ConnectionLimits ----------------------------------------------------------------------------


def test_the_default_limits():
    limits = ConnectionLimits()
    assert (limits.header_timeout, limits.body_timeout) == (10.0, 30.0)
    assert (limits.max_connections, limits.max_client_connections) == (1024, 512)


@pytest.mark.parametrize("name", ["header_timeout", "body_timeout"])
@pytest.mark.parametrize("value", [0, -1, 0.0, True, "5", None, float("nan")])
def test_timeouts_must_be_positive_numbers(name, value):
    with pytest.raises(ValueError) as refused:
        ConnectionLimits(**{name: value})
    assert str(refused.value) == f"{name} must be a positive number of seconds, got {value!r}"


@pytest.mark.parametrize("name", ["header_timeout", "body_timeout"])
def test_the_smallest_timeouts_are_allowed(name):
    assert getattr(ConnectionLimits(**{name: 0.001}), name) == 0.001
    assert getattr(ConnectionLimits(**{name: 1}), name) == 1


@pytest.mark.parametrize("name", ["max_connections", "max_client_connections"])
@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
def test_connection_caps_must_be_positive_integers(name, value):
    with pytest.raises(ValueError) as refused:
        ConnectionLimits(**{name: value})
    assert str(refused.value) == f"{name} must be a positive integer, got {value!r}"


def test_caps_of_one_are_allowed():
    limits = ConnectionLimits(max_connections=1, max_client_connections=1)
    assert (limits.max_connections, limits.max_client_connections) == (1, 1)


def test_uvicorn_options_bind_the_limits_to_a_protocol_class_of_their_own():
    limits = ConnectionLimits(max_connections=100)
    options = uvicorn_options(limits)
    assert set(options) == {"http", "backlog"}
    assert options["backlog"] == backlog_for(100)
    protocol = options["http"]
    assert issubclass(protocol, GuardedHttpToolsProtocol) and protocol.__name__ == "SongbirdHttpProtocol"
    assert protocol.limits is limits
    other = guarded_protocol(limits)
    assert other.open_by_client == {} and other.open_by_client is not protocol.open_by_client
    assert other.open_by_client is not GuardedHttpToolsProtocol.open_by_client


# -- the log rate limit --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(connections, "time", fake)
    return fake


def record(msg: str, name: str = "asyncio", args: tuple = ()) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_one_record_of_a_kind_per_interval_then_the_count_of_those_left_out(clock):
    limiter = RateLimitFilter(interval=10)
    first = record("accept failed: %s", args=("a",))
    assert limiter.filter(first) is True and first.getMessage() == "accept failed: a"  # nothing left out yet
    assert limiter.filter(record("accept failed: %s", args=("b",))) is False  # same kind: the template counts
    clock.now += 9.99
    assert limiter.filter(record("accept failed: %s")) is False
    clock.now += 0.01  # 10 s after the first: let through, with the count
    third = record("accept failed: %s", args=("c",))
    assert limiter.filter(third) is True
    assert third.getMessage() == "accept failed: c (2 more like this in the last 10 s were not logged)"
    clock.now += 10
    fourth = record("accept failed: %s", args=("d",))
    assert limiter.filter(fourth) is True and fourth.getMessage() == "accept failed: d"  # none left out


def test_kinds_are_the_logger_and_the_first_120_characters_of_the_template(clock):
    limiter = RateLimitFilter(interval=2.5)
    assert limiter.filter(record("x" * 120 + "a")) is True
    assert limiter.filter(record("x" * 120 + "b")) is False  # the same first 120 characters
    assert limiter.filter(record("x" * 119 + "b")) is True
    assert limiter.filter(record("x" * 120 + "a", name="uvicorn.error")) is True
    assert limiter.filter(record("x" * 120 + "a")) is False
    clock.now += 2.5
    late = record("x" * 120 + "a")
    assert limiter.filter(late) is True
    assert late.getMessage().endswith(" (2 more like this in the last 2.5 s were not logged)")


def test_the_default_interval_is_ten_seconds():
    assert RateLimitFilter().interval == 10.0


def test_many_kinds_forget_the_old_ones(clock):
    limiter = RateLimitFilter(interval=10)
    for i in range(1000):
        assert limiter.filter(record(f"kind {i}")) is True
    assert len(limiter._state) == 1000
    clock.now += 5
    assert limiter.filter(record("kind 1000")) is True  # 1001 kinds: those 10 s old or more go; none is
    assert len(limiter._state) == 1001
    clock.now += 5  # the first thousand are 10 s old now
    assert limiter.filter(record("kind 1001")) is True
    assert len(limiter._state) == 2  # kind 1000 (5 s old) and kind 1001
    assert limiter.filter(record("kind 3")) is True  # forgotten: let through again
    assert limiter.filter(record("kind 1000")) is False  # remembered


def test_the_rate_limit_is_installed_once_on_each_logger():
    assert RATE_LIMITED_LOGGERS == ("asyncio", "uvicorn.error", "whylogs_songbird.server.connections")
    targets = [logging.getLogger(name) for name in RATE_LIMITED_LOGGERS]
    before = [list(t.filters) for t in targets]
    try:
        install_log_rate_limit()
        install_log_rate_limit()
        for target, filters in zip(targets, before, strict=True):
            added = [f for f in target.filters if f not in filters]
            assert added == ([] if connections._RATE_LIMIT in filters else [connections._RATE_LIMIT])
            assert target.filters.count(connections._RATE_LIMIT) == 1
    finally:
        for target, filters in zip(targets, before, strict=True):
            target.filters = filters


def test_the_raw_response():
    raw = connections._raw_response(408, "Request Timeout", 'say "hi"')
    body = b'{"message": "say \\"hi\\""}'
    assert raw == (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nx-content-type-options: nosniff\r\n"
        b"cache-control: no-store\r\n\r\n" + body
    )


# -- the protocol, driven by hand ----------------------------------------------------------------


class FakeSocket:
    """The transport under the protocol: what was written, whether it is closed, reading paused."""

    def __init__(self, peer: tuple[str, int] | None) -> None:
        self.peer = peer
        self.writes: list[bytes] = []
        self.closed = False
        self.reading_paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8787)}.get(name, default)

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)


class RecordingLoop(asyncio.SelectorEventLoop):
    """A real loop that records each ``call_later``: (delay, callback name, args)."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[tuple[float, str, tuple]] = []

    def call_later(self, delay, callback, *args, context=None):  # type: ignore[override]
        self.timers.append((delay, getattr(callback, "__name__", ""), args))
        return super().call_later(delay, callback, *args, context=context)

    def guards(self) -> list[tuple[float, str]]:
        return [(delay, args[0]) for delay, name, args in self.timers if name == "_on_timeout"]


async def answer_ok(scope, receive, send):
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Server:
    """One process's protocol class, its state and loop; ``connect`` makes connections."""

    def __init__(self, limits: ConnectionLimits, app: Any = answer_ok) -> None:
        self.loop = RecordingLoop()
        self.protocol = guarded_protocol(limits)
        self.config = Config(app, lifespan="off", log_level="critical", access_log=False, proxy_headers=False)
        self.config.load()
        self.state = ServerState()

    def connect(self, peer: tuple[str, int] | None = ("10.0.0.1", 5000)) -> tuple[GuardedHttpToolsProtocol, FakeSocket]:
        protocol = self.protocol(config=self.config, server_state=self.state, app_state={}, _loop=self.loop)
        sock = FakeSocket(peer)
        protocol.connection_made(sock)  # type: ignore[arg-type]
        return protocol, sock

    def turn(self) -> None:
        """Let the app's tasks and the scheduled flushes run."""
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    def close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.turn()
        self.loop.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(ConnectionLimits(header_timeout=7, body_timeout=3, max_connections=3, max_client_connections=2))
    yield s
    s.close()


def test_a_connection_counts_for_its_client_and_waits_for_its_head(server):
    protocol, sock = server.connect()
    assert server.protocol.open_by_client == {"10.0.0.1": 1}
    assert server.loop.guards() == [(7, "header")]
    assert sock.writes == [] and not sock.closed
    protocol.connection_lost(None)
    assert server.protocol.open_by_client == {}
    protocol.connection_lost(None)  # told twice: counted off once
    assert server.protocol.open_by_client == {}


def test_one_client_holds_at_most_its_share(server, caplog):
    first, _ = server.connect(("10.0.0.1", 1))
    server.connect(("10.0.0.1", 2))
    refused, sock = server.connect(("10.0.0.1", 3))
    assert sock.closed and sock.sent.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert sock.sent.endswith(
        b'{"message": "This client address has 2 connections open to the server, the limit per client; close idle '
        b"ones or reuse them, and try again. The server's operator can raise it with --max-client-connections.\"}"
    )
    assert server.protocol.open_by_client == {"10.0.0.1": 2}
    assert [r.getMessage() for r in caplog.records if r.name == "whylogs_songbird.server.connections"] == [
        "refused a connection from 10.0.0.1: it has 2 open, the limit per client of this process "
        "(--max-client-connections)"
    ]
    refused.connection_lost(None)  # a refused connection was never counted
    assert server.protocol.open_by_client == {"10.0.0.1": 2}
    first.connection_lost(None)
    assert server.protocol.open_by_client == {"10.0.0.1": 1}
    _, again = server.connect(("10.0.0.1", 4))
    assert not again.closed


def test_an_ipv6_network_is_one_client_and_no_address_is_one_client():
    server = Server(ConnectionLimits(max_connections=10, max_client_connections=1))
    try:
        server.connect(("2001:db8::1", 1))
        _, sock = server.connect(("2001:db8::2", 1))
        assert sock.closed
        _, other = server.connect(("2001:db8:0:1::1", 1))
        assert not other.closed
        anonymous, first = server.connect(None)
        _, second = server.connect(None)
        assert not first.closed and second.closed
        assert server.protocol.open_by_client == {"2001:db8::/64": 1, "2001:db8:0:1::/64": 1, "": 1}
        anonymous.connection_lost(None)
        assert "" not in server.protocol.open_by_client
    finally:
        server.close()


def test_connections_over_the_process_cap_are_refused(server, caplog):
    for port in range(3):
        _, sock = server.connect((f"10.0.0.{port}", port))  # 3: the cap
        assert not sock.closed
    _, sock = server.connect(("10.0.0.9", 9))
    assert sock.closed
    assert sock.sent.startswith(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n")
    assert sock.sent.endswith(
        b'{"message": "The server has 3 connections open, its limit; try again shortly. The server\'s operator can '
        b'raise it with --max-connections."}'
    )
    assert "10.0.0.9" not in server.protocol.open_by_client
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "refused a connection: 3 are open, the limit of this process (--max-connections)"
    ]


def test_a_connection_that_never_says_a_word_is_closed_without_an_answer(server, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.connections")
    protocol, sock = server.connect(("10.0.0.1", 5000))
    protocol._on_timeout("header")
    assert sock.closed and sock.writes == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "closed a connection from 10.0.0.1:5000 that sent nothing for 7 s")
    ]


def test_a_half_sent_head_is_answered_408(server, caplog):
    protocol, sock = server.connect(("10.0.0.1", 5000))
    protocol.data_received(b"GET / HTTP/1.1\r\nHo")
    assert server.loop.guards() == [(7, "header")]  # the deadline runs from the connection: not re-armed
    protocol._on_timeout("header")
    assert sock.closed
    assert sock.sent.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert sock.sent.endswith(
        b'{"message": "The request timed out: the client did not send its request line and headers within 7 s, '
        b"so the server closed the connection. Send requests without pauses, or start the server with a larger "
        b'--header-timeout."}'
    )
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "closed a connection from 10.0.0.1:5000 that did not send its request line and headers within 7 s",
        )
    ]


def test_a_silent_body_is_answered_408_and_the_app_sees_a_disconnect(caplog):
    seen: list[dict] = []

    async def reading(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    server = Server(ConnectionLimits(header_timeout=7, body_timeout=3.5), app=reading)
    try:
        protocol, sock = server.connect(("10.0.0.1", 5000))
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert server.loop.guards()[-1] == (3.5, "body")
        protocol.data_received(b"abc")
        assert server.loop.guards()[-2:] == [(3.5, "body"), (3.5, "body")]  # every read re-arms it
        server.turn()
        protocol._on_timeout("body")
        server.turn()
        assert sock.closed
        assert sock.sent.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"the client sent no body bytes for 3.5 s" in sock.sent and b"larger --body-timeout" in sock.sent
        assert seen[-1] == {"type": "http.disconnect"}
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            "closed a connection from 10.0.0.1:5000 that sent no body bytes for 3.5 s"
        ]
    finally:
        server.close()


def test_a_body_timeout_while_the_app_is_slow_to_read_is_not_the_client_s(server):
    protocol, sock = server.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert protocol.flow is not None
    protocol.flow.pause_reading()
    before = len(server.loop.guards())
    protocol._on_timeout("body")
    assert not sock.closed and sock.writes == []
    assert server.loop.guards()[before:] == [(3, "body")]


def test_a_timeout_after_the_answer_started_only_closes(caplog):
    started = asyncio.Event()

    async def streaming(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await asyncio.sleep(3600)

    server = Server(ConnectionLimits(body_timeout=3), app=streaming)
    try:
        protocol, sock = server.connect()
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        server.turn()
        assert protocol.cycle is not None and protocol.cycle.response_started
        written = sock.sent
        protocol._on_timeout("body")
        assert sock.closed and b"408" not in sock.sent[len(written) :]
        assert protocol.cycle.disconnected is True
    finally:
        server.close()


def test_a_timeout_on_a_closed_connection_does_nothing(server, caplog):
    caplog.set_level(logging.DEBUG)
    protocol, sock = server.connect()
    sock.closed = True
    protocol._on_timeout("header")
    assert sock.writes == [] and caplog.records == []


def test_a_closed_connection_arms_no_timer(server):
    protocol, sock = server.connect()
    sock.closed = True
    protocol._watch()
    assert protocol._guard is None and server.loop.guards() == [(7, "header")]


def test_an_anonymous_connection_is_named_a_client(server, caplog):
    caplog.set_level(logging.INFO, logger="whylogs_songbird.server.connections")
    protocol, sock = server.connect(None)
    protocol._on_timeout("header")
    assert sock.closed
    assert [r.getMessage() for r in caplog.records] == ["closed a connection from a client that sent nothing for 7 s"]


def test_an_empty_read_is_no_request_byte(server):
    protocol, sock = server.connect()
    protocol.data_received(b"")
    protocol._on_timeout("header")
    assert sock.closed and sock.writes == []  # closed without an answer: it never sent a byte


def test_a_lost_connection_with_an_error_is_not_closed_again(server):
    protocol, sock = server.connect()
    protocol.connection_lost(OSError("reset"))
    assert not sock.closed and server.protocol.open_by_client == {}
    other, other_sock = server.connect()
    other.connection_lost(None)
    assert other_sock.closed


def test_a_refused_connection_going_away_does_not_count_off_another(caplog):
    server = Server(ConnectionLimits(max_connections=1, max_client_connections=5))
    try:
        server.connect(None)  # an anonymous client holds the one place
        refused, sock = server.connect(None)
        assert sock.closed
        refused.connection_lost(None)
        assert server.protocol.open_by_client == {"": 1}
    finally:
        server.close()


def test_the_protocol_takes_uvicorn_s_arguments_by_position():
    server = Server(ConnectionLimits())
    try:
        protocol = server.protocol(server.config, server.state, {}, server.loop)
        assert protocol.loop is server.loop and protocol.app_state == {}
    finally:
        server.close()


def test_an_answered_request_waits_for_the_next_head_with_uvicorn_s_keep_alive(server):
    protocol, sock = server.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert server.loop.guards() == [(7, "header")]  # the head arrived: no body to wait for
    server.turn()
    assert sock.sent.startswith(b"HTTP/1.1 200 OK\r\n") and sock.sent.endswith(b"\r\n\r\nok")
    assert len(sock.writes) == 1  # head and body in one write
    assert protocol.timeout_keep_alive_task is not None  # idle: uvicorn's keep-alive closes it
    assert protocol._guard is None
    protocol.data_received(b"GET /")  # the next request's first bytes: a fresh header deadline
    assert server.loop.guards() == [(7, "header"), (7, "header")]
    protocol.data_received(b" HTTP/1.1\r\nHost: x\r\n\r\n")
    server.turn()
    assert sock.sent.count(b"HTTP/1.1 200 OK") == 2


def test_while_the_app_answers_no_timer_runs(server):
    gates = [asyncio.Event(), asyncio.Event()]
    calls: list[int] = []

    async def slow(scope, receive, send):
        calls.append(1)
        await gates[len(calls) - 1].wait()
        await answer_ok(scope, receive, send)

    slow_server = Server(ConnectionLimits(header_timeout=7), app=slow)
    try:
        protocol, sock = slow_server.connect()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        slow_server.turn()
        assert protocol._guard is None  # a whole request read, not answered: the app's time
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
        assert protocol._guard is None
        gates[0].set()
        slow_server.turn()
        assert sock.sent.count(b"HTTP/1.1 200 OK") == 1
        assert protocol._guard is None  # the second request is still the app's: no header deadline
        assert slow_server.loop.guards() == [(7, "header")]
        gates[1].set()
        slow_server.turn()
        assert sock.sent.count(b"HTTP/1.1 200 OK") == 2
        assert protocol._guard is None and protocol.timeout_keep_alive_task is not None
    finally:
        slow_server.close()


def test_kinds_are_forgotten_only_past_a_thousand(clock):
    limiter = RateLimitFilter(interval=10)
    for i in range(999):
        limiter.filter(record(f"kind {i}"))
    clock.now += 10  # every kind so far is old
    limiter.filter(record("kind 999"))
    assert len(limiter._state) == 1000  # a thousand kinds: none forgotten
    limiter.filter(record("kind 1000"))
    assert len(limiter._state) == 2  # past a thousand: the old ones go
