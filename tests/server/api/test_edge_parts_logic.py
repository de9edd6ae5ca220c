"""The parts of the server's edge (middleware.py) as pure ASGI: body limits per kind of path at
N and N+1 bytes, declared and streamed, what a refusal says and that the rest of a refused body
is read and dropped; network emulation; and the exact answer to an error of the edge itself.
Every request is a list of ASGI messages and every answer the messages sent: no server, no sleep.
"""

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from whylogs_songbird.server import middleware
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.faults import FaultInjector
from whylogs_songbird.server.middleware import (
    BodyLimits,
    BodyTooLargeError,
    EdgeMiddleware,
    NetworkEmulation,
    RequestCounter,
)
from whylogs_songbird.server.security import HostAllowList, HostGate
from whylogs_songbird.server.unexpected import RepeatedErrors

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/middleware.py")

MiB = 1024 * 1024
#: The headers every answer through the edge ends with (security.py), written out.
SECURITY = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
        b"font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
JSON_TOO_LARGE = "The JSON request body is larger than this server's limit of 10 bytes; send a smaller request."
UPLOAD_TOO_LARGE = (
    "The profile is larger than this server's limit of 20 bytes; start the server with a larger "
    "max_upload_bytes or upload a smaller profile."
)
BUNDLE_TOO_LARGE = "The bundle is larger than this server's limit of 68719476736 bytes; split the session."


def body(*chunks: bytes) -> list[dict[str, Any]]:
    """A request body sent in these chunks; the last message leaves ``more_body`` out (ASGI: False)."""
    *first, last = chunks
    return [{"type": "http.request", "body": c, "more_body": True} for c in first] + [
        {"type": "http.request", "body": last}
    ]


class Client:
    """The client's side of one request: its messages in order, and how many were read. Once
    they are all read, ``receive`` answers ``http.disconnect`` and counts a read past the end."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.read = 0
        self.past_end = 0

    async def receive(self) -> dict[str, Any]:
        if self.read == len(self.messages):
            self.past_end += 1
            return {"type": "http.disconnect"}
        self.read += 1
        return self.messages[self.read - 1]


def scope(path: str, content_length: bytes | None = None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8080")]
    if content_length is not None:
        headers.append((b"content-length", content_length))
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}


LIMITS = BodyLimits(ServerConfig(max_json_bytes=10, max_upload_bytes=20))


async def answered(response: Response | None) -> list[dict[str, Any]]:
    """The messages ``response`` sends."""
    assert response is not None
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response(scope("/"), Client([]).receive, send)
    return sent


# -- BodyLimits ------------------------------------------------------------------------------------


def test_each_kind_of_path_has_its_limit_and_its_message():
    assert LIMITS.limit("/v0/sessions") == 10
    assert LIMITS.limit("/v0/uploads/u-1") == 20
    assert LIMITS.limit("/v0/uploads") == 10  # the prefix ends with its slash
    assert LIMITS.limit("/api/v1/import") == 68719476736
    assert LIMITS.limit("/api/v1/import/x") == 10
    assert LIMITS.message("/v0/sessions") == JSON_TOO_LARGE
    assert LIMITS.message("/v0/uploads/u-1") == UPLOAD_TOO_LARGE
    assert LIMITS.message("/api/v1/import") == BUNDLE_TOO_LARGE


@pytest.mark.parametrize(
    ("path", "limit", "message"),
    [
        ("/v0/sessions", b"10", JSON_TOO_LARGE),
        ("/v0/uploads/u-1", b"20", UPLOAD_TOO_LARGE),
        ("/api/v1/import", b"68719476736", BUNDLE_TOO_LARGE),
    ],
)
def test_a_declared_length_at_the_limit_passes_one_more_is_413_after_the_body_is_drained(path, limit, message):
    client = Client(body(b"abc"))
    assert asyncio.run(LIMITS.refusal(scope(path, limit), client.receive)) is None
    assert client.read == 0  # the body is left to the app

    client = Client(body(b"abc", b"def", b"ghi"))
    over = str(int(limit) + 1).encode()
    sent = asyncio.run(answered(asyncio.run(LIMITS.refusal(scope(path, over), client.receive))))
    payload = ('{"message":"' + message + '"}').encode()
    assert sent == [
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"connection", b"close"),
                (b"content-length", str(len(payload)).encode()),
                (b"content-type", b"application/json"),
            ],
        },
        {"type": "http.response.body", "body": payload},
    ]
    assert (client.read, client.past_end) == (3, 0)  # every chunk read, nothing past the end


def test_a_content_length_that_is_no_number_is_400_and_its_body_is_not_read():
    client = Client(body(b"abc"))
    sent = asyncio.run(answered(asyncio.run(LIMITS.refusal(scope("/v0/sessions", b"12a"), client.receive))))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-length", b"45"), (b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": b'{"message":"Content-Length is not a number."}'},
    ]
    assert client.read == 0


def test_a_request_without_a_content_length_or_any_header_is_not_refused_before_its_body():
    client = Client(body(b"x" * 100))
    assert asyncio.run(LIMITS.refusal(scope("/v0/sessions"), client.receive)) is None
    assert asyncio.run(LIMITS.refusal({"type": "http", "path": "/v0/sessions"}, client.receive)) is None
    assert client.read == 0


def read_all(path: str, client: Client) -> list[dict[str, Any]]:
    """The messages the app gets through ``limited`` until the body ends (or the limit raises)."""
    receive = LIMITS.limited(scope(path), client.receive)

    async def run() -> list[dict[str, Any]]:
        got = [await receive()]
        while got[-1].get("more_body", False):
            got.append(await receive())
        return got

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("path", "limit", "message"),
    [("/v0/sessions", 10, JSON_TOO_LARGE), ("/v0/uploads/u-1", 20, UPLOAD_TOO_LARGE)],
)
def test_a_streamed_body_is_counted_over_its_chunks_at_the_limit_and_one_past_it(path, limit, message):
    half = limit // 2
    messages = body(b"a" * half, b"b" * (limit - half))
    assert read_all(path, Client(messages)) == messages  # handed on unchanged

    client = Client(body(b"a" * half, b"b" * (limit - half + 1)))
    with pytest.raises(BodyTooLargeError) as raised:
        read_all(path, client)
    assert (raised.value.status_code, raised.value.detail) == (413, message)
    assert (client.read, client.past_end) == (2, 0)


def test_a_streamed_bundle_import_has_the_bundle_limit():
    assert read_all("/api/v1/import", Client(body(b"x" * 30))) == body(b"x" * 30)


def test_the_rest_of_a_streamed_body_is_drained_when_it_passes_the_limit_before_its_end():
    client = Client(body(b"12345", b"678901", b"more", b"and the end"))
    with pytest.raises(BodyTooLargeError):
        read_all("/v0/sessions", client)
    assert (client.read, client.past_end) == (4, 0)


def test_other_messages_pass_through_limited_uncounted():
    client = Client([{"type": "http.disconnect", "body": b"x" * 50}])
    assert read_all("/v0/sessions", client) == [{"type": "http.disconnect", "body": b"x" * 50}]


def test_draining_stops_at_a_disconnect():
    client = Client([*body(b"x" * 11, b"y")[:1], {"type": "http.disconnect"}, *body(b"never read")])
    with pytest.raises(BodyTooLargeError):
        read_all("/v0/sessions", client)
    assert client.read == 2


def test_draining_drops_at_most_16_mib_and_the_chunk_that_passes_it():
    chunk = b"z" * (4 * MiB)
    client = Client(body(*[chunk] * 9, b""))
    with pytest.raises(BodyTooLargeError):
        read_all("/v0/sessions", client)
    # the chunk over the limit, then 16 MiB in four chunks, then one more (the budget reached 0)
    assert (client.read, client.past_end) == (6, 0)


def test_body_too_large_is_a_413_carrying_its_message():
    error = BodyTooLargeError("too big; send less")
    assert (error.status_code, error.detail) == (413, "too big; send less")


# -- the edge, with its steps -----------------------------------------------------------------------


class Edge:
    """An :class:`EdgeMiddleware` around ``app`` and what one request through it sent, observed and logged."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.counter = RequestCounter()
        self.observed: list[tuple[str, int, float]] = []
        self.edge = EdgeMiddleware(
            app,
            config=ServerConfig(**config),
            gate=HostGate(HostAllowList("127.0.0.1")),
            counter=self.counter,
            errors=RepeatedErrors(logging.getLogger("test_edge_parts_logic")),
            durations=self,  # type: ignore[arg-type]
        )
        self.sent: list[dict[str, Any]] = []

    def observe(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        self.observed.append((scope["path"], status, seconds))

    def request(self, path: str = "/v0/sessions", receive: Any = None, content_length: bytes | None = None) -> None:
        self.sent.clear()

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)

        asyncio.run(self.edge(scope(path, content_length), receive or Client(body(b"{}")).receive, send))

    @property
    def status(self) -> int:
        return self.sent[0]["status"]


async def created(scope, receive, send):
    await JSONResponse({"ok": True}, status_code=201)(scope, receive, send)


def test_a_declared_body_over_the_limit_never_reaches_the_app_and_is_answered_413_with_the_headers():
    client = Client(body(b"12345", b"678901"))
    edge = Edge(created, max_json_bytes=10)
    edge.request(receive=client.receive, content_length=b"11")
    payload = (
        b'{"message":"The JSON request body is larger than this server\'s limit of 10 bytes; send a smaller request."}'
    )
    assert edge.sent == [
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"connection", b"close"),
                (b"content-length", b"107"),
                (b"content-type", b"application/json"),
                *SECURITY,
            ],
        },
        {"type": "http.response.body", "body": payload},
    ]
    assert (client.read, client.past_end) == (2, 0)
    assert [(path, status) for path, status, _ in edge.observed] == [("/v0/sessions", 413)]


def test_an_error_of_the_edge_itself_is_a_plain_500_without_the_security_headers(caplog):
    problem = RuntimeError("a hook broke")

    async def broken(request: Request) -> Response | None:
        raise problem

    edge = Edge(created, request_hooks=[broken])
    with caplog.at_level(logging.ERROR, logger="test_edge_parts_logic"):
        edge.request()
    payload = b'{"message":"The local songbird server failed unexpectedly; see its log for the traceback."}'
    assert edge.sent == [
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-length", b"91"), (b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": payload},
    ]
    assert [(r.getMessage(), r.exc_info and r.exc_info[1]) for r in caplog.records] == [
        ("unexpected error while answering a request", problem)
    ]
    assert [(path, status) for path, status, _ in edge.observed] == [("/v0/sessions", 500)]
    assert edge.counter.in_flight == 0


def test_an_app_that_answers_nothing_is_observed_as_the_500_the_server_then_sends():
    async def silent(scope, receive, send):
        return None

    edge = Edge(silent)
    edge.request()
    assert edge.sent == []
    assert [(path, status) for path, status, _ in edge.observed] == [("/v0/sessions", 500)]


def test_a_request_is_observed_for_the_seconds_between_its_start_and_its_end(monkeypatch):
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(middleware, "perf_counter", lambda: next(clock))
    edge = Edge(created)
    edge.request()
    assert edge.observed == [("/v0/sessions", 201, 2.5)]


def test_a_request_counts_on_top_of_the_others_in_flight():
    seen: list[tuple[int, bool]] = []

    async def app(scope, receive, send):
        seen.append((edge.counter.in_flight, edge.counter.busy()))
        await created(scope, receive, send)

    edge = Edge(app)
    assert not edge.counter.busy()
    edge.request()
    edge.counter.in_flight = 3  # three others being answered
    edge.request()
    assert seen == [(1, True), (4, True)]
    assert edge.counter.in_flight == 3


def test_other_scopes_reach_the_app_as_they_are():
    seen: list[Any] = []

    async def app(scope, receive, send):
        seen.append(scope)

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(Edge(app).edge(lifespan, Client([]).receive, Client([]).receive))
    assert seen == [lifespan]


# -- network emulation ------------------------------------------------------------------------------


def test_emulation_is_wanted_for_any_one_of_latency_faults_and_hooks():
    async def hook(request: Request) -> None:
        return None

    assert not NetworkEmulation.wanted(ServerConfig())
    assert NetworkEmulation.wanted(ServerConfig(latency_ms=1))
    assert NetworkEmulation.wanted(ServerConfig(fault_rate=0.1))
    assert NetworkEmulation.wanted(ServerConfig(request_hooks=[hook]))


def test_a_seeded_fault_rate_answers_the_same_faults_in_the_same_order():
    for _ in range(2):
        edge = Edge(created, fault_rate=0.5, fault_seed=4)
        answers = []
        for _ in range(6):
            edge.request()
            answers.append((edge.status, dict(edge.sent[0]["headers"]).get(b"retry-after")))
        assert answers == [(500, None), (500, None), (429, b"0"), (429, b"1"), (201, None), (201, None)]
    assert edge.sent[1]["body"] == b'{"ok":true}'


def test_hooks_see_the_request_body_and_the_first_answer_wins():
    calls: list[str] = []

    async def first(request: Request) -> Response | None:
        calls.append("first")
        if await request.body() == b"refuse me":
            return JSONResponse({"message": "refused"}, status_code=418)
        return None

    async def second(request: Request) -> Response | None:
        calls.append("second")
        return None

    # (a body a hook reads is gone for the app: ``created`` reads none)
    edge = Edge(created, request_hooks=[first, second])
    edge.request(receive=Client(body(b"refuse me")).receive)
    assert (edge.status, edge.sent[1]["body"], calls) == (418, b'{"message":"refused"}', ["first"])
    assert dict(edge.sent[0]["headers"])[b"x-frame-options"] == b"DENY"
    calls.clear()
    edge.request(receive=Client(body(b"fine")).receive)
    assert (edge.status, calls) == (201, ["first", "second"])


@pytest.mark.parametrize(("path", "hooked"), [
    ("/healthz", False), ("/_local/stats", False), ("/healthz/x", True), ("/_localx", True), ("/v0/x", True),
])  # fmt: skip
def test_health_and_local_paths_skip_the_delay_and_the_hooks(monkeypatch, path, hooked):
    slept: list[Any] = []

    async def sleep(seconds: Any) -> None:
        slept.append(seconds)

    async def teapot(request: Request) -> Response:
        return JSONResponse({"message": "hooked"}, status_code=418)

    monkeypatch.setattr(middleware, "asyncio", SimpleNamespace(sleep=sleep))
    edge = Edge(created, latency_ms=250, request_hooks=[teapot])
    edge.request(path)
    assert (edge.status, slept) == ((418, [0.25]) if hooked else (201, []))


class Cycle:
    """What uvicorn's request cycle offers a dropped-connection fault: ``receive`` as its bound
    method, its transport, and whether the connection is gone."""

    def __init__(self) -> None:
        self.disconnected = False
        self.transport = self

    def close(self) -> None:
        self.disconnected = True

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}


def test_a_hooks_answer_is_given_the_requests_own_receive():
    cycle = Cycle()
    edge = Edge(created, request_hooks=[FaultInjector(1.0, kinds=("drop",))])
    edge.request(receive=cycle.receive)
    assert edge.sent == []
    assert cycle.disconnected


def test_a_client_gone_while_a_hook_reads_its_body_is_logged_at_debug_only(caplog):
    async def reader(request: Request) -> None:
        await request.body()

    edge = Edge(created, request_hooks=[reader])
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server"):
        edge.request(receive=Client([]).receive)
    assert edge.sent == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "whylogs_songbird.server"] == [
        (logging.DEBUG, "the client went away before its request body was read")
    ]
    assert edge.counter.in_flight == 0
