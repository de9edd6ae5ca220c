"""The routers' shared dependencies and helpers (server/routes/deps.py) as logic: called directly,
or through a tiny FastAPI app answered in-process (``TestClient``, no server), over the real
embedded store in a temporary directory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastapi.routing
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRouter

from whylogs_songbird.models import ErrorResponse, WireModel
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.routes import deps
from whylogs_songbird.server.routes.deps import (
    LONE_SURROGATE_MESSAGE,
    DirectRoute,
    JsonBodyRoute,
    add_routes,
    check_text,
    counted,
    describe_validation_errors,
    get_config,
    get_signer,
    get_store,
    json_answer,
    open_session,
    upload_url,
)
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.store import Store, UploadRecord

with warnings.catch_warnings():  # this Starlette prefers httpx2 to the installed httpx, which it still uses
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/routes/deps.py")

UNKNOWN = "session-" + "0" * 32
UPLOAD_ID = "log-" + "0123abcd" * 4


@pytest.fixture(autouse=True)
def request_threads(monkeypatch) -> Iterator[None]:
    """A fresh worker pool for ``in_thread``, of the module's thread names. A mutation run tests each
    mutant in a child forked from a process that has used the module's pool: the pool's threads do
    not exist in the child, and work handed to it there would never run (each such test timed out)."""
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=deps._THREADS._thread_name_prefix)
    monkeypatch.setattr(deps, "_THREADS", pool)
    yield
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """The embedded store (SQLite and files) in a temporary directory."""
    opened = Store(tmp_path / "data")
    yield opened
    opened.close()


# -- the app's parts ----------------------------------------------------------------------------


def test_the_store_config_and_signer_are_the_app_s():
    state = SimpleNamespace(store=object(), config=object(), signer=object())
    request: Any = SimpleNamespace(app=SimpleNamespace(state=state))
    assert asyncio.run(get_store(request)) is state.store
    assert asyncio.run(get_config(request)) is state.config
    assert asyncio.run(get_signer(request)) is state.signer


def test_a_counted_route_counts_each_call_of_its_operation(store):
    app = FastAPI()
    app.state.store = store

    @app.get("/a", dependencies=[counted("op_a")])
    async def route_a() -> dict[str, str]:
        return {"route": "a"}

    @app.get("/b", dependencies=[counted("op_b")])
    async def route_b() -> dict[str, str]:
        return {"route": "b"}

    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert [client.get("/a").json(), client.get("/a").json(), client.get("/b").json()] == [
            {"route": "a"},
            {"route": "a"},
            {"route": "b"},
        ]
    stats = store.stats()
    assert (stats.get("op_a"), stats.get("op_b")) == (2, 1)


def test_routes_are_added_to_the_target_in_order_after_its_own():
    target, router = APIRouter(), APIRouter()

    @target.get("/own")
    async def own() -> None: ...

    @router.get("/one")
    async def one() -> None: ...

    @router.post("/two")
    async def two() -> None: ...

    add_routes(target, router)
    assert [route.path for route in target.routes] == ["/own", "/one", "/two"]  # type: ignore[attr-defined]
    assert target.routes[1] is router.routes[0] and target.routes[2] is router.routes[1]


def test_links_start_at_the_public_url_or_the_request_s_own(tmp_path):
    request = Request({"type": "http", "scheme": "http", "server": ("127.0.0.1", 81), "path": "/x",
                       "query_string": b"", "headers": [(b"host", b"deps.test:7")]})  # fmt: skip
    assert deps.base_url(ServerConfig(data_dir=tmp_path, public_url="https://pub.test/sb/"), request) == (
        "https://pub.test/sb"
    )
    assert deps.base_url(ServerConfig(data_dir=tmp_path), request) == "http://deps.test:7"


def test_a_json_answer_is_the_model_s_wire_form_with_its_status():
    answer = json_answer(ErrorResponse(message="made"), 201)
    assert (answer.status_code, json.loads(answer.body)) == (201, {"message": "made"})
    assert answer.headers["content-type"] == "application/json"
    assert json_answer(ErrorResponse(message="ok")).status_code == 200


# -- sessions -----------------------------------------------------------------------------------


def test_a_guest_operation_opens_its_session_or_gets_the_same_404_for_unknown_and_claimed(store):
    session = store.create_session("u")
    assert open_session(store, session.id) == session
    claimed = store.create_session("u")
    assert store.claim(claimed.id, "org-1") is not None
    for session_id in (UNKNOWN, claimed.id, "not an id"):
        with pytest.raises(ApiError) as raised:
            open_session(store, session_id)
        assert raised.value.status == 404
        assert raised.value.message == (
            f"Session {session_id} is unknown to this server, or was claimed into an organization; "
            "start a new session with POST /v0/sessions."
        )


# -- text the store cannot keep --------------------------------------------------------------------


class Tag(WireModel):
    key: str
    value: str


class Body(WireModel):
    name: str = "n"
    count: int = 1
    tags: list[Tag] = []
    pair: tuple[str, str] = ("a", "b")
    attrs: dict[str, str] = {}
    note: str | None = None


LONE = "\ud800"


@pytest.mark.parametrize(
    "body",
    [
        Body(),
        Body(name="ünïcode ✓ 🐦", tags=[Tag(key="k", value="v")], pair=("x", "y"), attrs={"a": "b"}, note="n"),
        Body(count=0, tags=[], attrs={}),
    ],
)
def test_valid_text_anywhere_passes(body):
    assert check_text(body) is None


@pytest.mark.parametrize(
    "body",
    [
        Body(name=LONE),
        Body(name="a" + LONE + "b"),
        Body(tags=[Tag(key="k", value="v"), Tag(key=LONE, value="v")]),
        Body(tags=[Tag(key="k", value="v" + LONE)]),
        Body(pair=("x", LONE)),
        Body(attrs={LONE: "v"}),
        Body(attrs={"a": "b", "k": LONE}),
        Body(note="\udfff"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_with_400(body):
    with pytest.raises(ApiError) as raised:
        check_text(body)
    assert (raised.value.status, raised.value.message) == (
        400,
        "The request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text.",
    )
    assert raised.value.message == LONE_SURROGATE_MESSAGE


# -- validation errors --------------------------------------------------------------------------

TAIL = ". Send the JSON fields and parameters the songbird API contract describes."


@pytest.mark.parametrize(
    ("error", "part"),
    [
        ({"loc": ("body", "datasetTimestamp"), "type": "int_parsing", "msg": "Input should be a valid integer"},
         "field datasetTimestamp: Input should be a valid integer"),
        ({"loc": ("body", "segmentTags", 0, "key"), "type": "missing", "msg": "Field required"},
         "field segmentTags.0.key: Field required"),
        ({"loc": ("body",), "type": "missing", "msg": "Field required"},
         "the request body (send a JSON object with Content-Type: application/json): Field required"),
        ({"type": "model_attributes_type", "msg": "Input should be an object"},
         "the request body (send a JSON object with Content-Type: application/json): Input should be an object"),
        ({"loc": ("query", "limit"), "type": "int_parsing", "msg": "bad"}, "query parameter limit: bad"),
        ({"loc": ("header", "x-api-key"), "type": "missing", "msg": "Field required"},
         "header x-api-key: Field required"),
        ({"loc": ("path", "session_id", 1), "type": "x", "msg": "m"}, "path session_id.1: m"),
        ({"loc": ("cookie",), "type": "x", "msg": "m"}, "cookie: m"),
        ({"loc": ("body", "a")}, "field a: invalid"),
        ({"loc": ["query", "q"], "msg": "m"}, "query parameter q: m"),
    ],
)  # fmt: skip
def test_one_validation_error_is_named_by_where_it_is(error, part):
    assert describe_validation_errors([error]) == "The request is invalid: " + part + TAIL


def _error(n: int) -> dict[str, Any]:
    return {"loc": ("body", f"f{n}"), "type": "missing", "msg": f"m{n}"}


def test_the_first_five_errors_are_named_and_the_rest_counted():
    five = "; ".join(f"field f{n}: m{n}" for n in range(5))
    assert describe_validation_errors([_error(n) for n in range(2)]) == (
        "The request is invalid: field f0: m0; field f1: m1" + TAIL
    )
    assert describe_validation_errors([_error(n) for n in range(5)]) == "The request is invalid: " + five + TAIL
    assert describe_validation_errors([_error(n) for n in range(6)]) == (
        "The request is invalid: " + five + " (and 1 more)" + TAIL
    )
    assert describe_validation_errors([_error(n) for n in range(7)]) == (
        "The request is invalid: " + five + " (and 2 more)" + TAIL
    )


JSON_INVALID = "The request body is not valid JSON; send a JSON object as the songbird API contract describes."


def test_bad_json_or_a_lone_surrogate_among_the_first_five_errors_is_said_alone():
    bad_json = {"loc": ("body", 3), "type": "json_invalid", "msg": "JSON decode error"}
    unicode = {"loc": ("body", "key"), "type": "string_unicode", "msg": "Input should be a valid string"}
    assert describe_validation_errors([bad_json]) == JSON_INVALID
    assert describe_validation_errors([_error(0), _error(1), _error(2), _error(3), bad_json]) == JSON_INVALID
    assert describe_validation_errors([unicode]) == LONE_SURROGATE_MESSAGE
    assert describe_validation_errors([_error(0), unicode, bad_json]) == LONE_SURROGATE_MESSAGE
    # a sixth error is only counted
    five = "; ".join(f"field f{n}: m{n}" for n in range(5))
    assert describe_validation_errors([*(_error(n) for n in range(5)), bad_json]) == (
        "The request is invalid: " + five + " (and 1 more)" + TAIL
    )


# -- upload URLs ------------------------------------------------------------------------------------


def _upload() -> UploadRecord:
    return UploadRecord(
        id=UPLOAD_ID,
        session_id=UNKNOWN,
        kind="profile",
        dataset_timestamp=1700000000000,
        alias=None,
        segment_tags=(),
        created_at=1700000000000,
        expires_at=1700000900,
    )


def test_an_upload_url_is_this_server_s_signed_one_when_the_blob_store_presigns_none(store, tmp_path):
    secret = b"k" * 32
    url = upload_url(store, ServerConfig(data_dir=tmp_path), UrlSigner(secret), "http://h.test:1", _upload())
    signature = hmac.new(secret, f"{UPLOAD_ID}:1700000900".encode(), hashlib.sha256).hexdigest()
    assert url == f"http://h.test:1/v0/uploads/{UPLOAD_ID}?expires=1700000900&signature={signature}"


class PresigningStore:
    """The store's one call here, as a blob store that presigns its own PUT URLs answers it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def upload_url(self, upload: UploadRecord, ttl_seconds: int) -> str:
        self.asked.append((upload.id, ttl_seconds))
        return "https://bucket.test/put?sig=1"


def test_an_upload_url_is_the_blob_store_s_presigned_one_for_the_configured_time(tmp_path):
    presigning = PresigningStore()
    config = ServerConfig(data_dir=tmp_path, url_ttl_seconds=123)
    url = upload_url(presigning, config, UrlSigner(b"k" * 32), "http://h.test:1", _upload())  # type: ignore[arg-type]
    assert url == "https://bucket.test/put?sig=1"
    assert presigning.asked == [(UPLOAD_ID, 123)]


# -- DirectRoute ----------------------------------------------------------------------------------


def test_a_direct_route_gets_its_path_parameters_and_the_request_and_nothing_else(store):
    app = FastAPI()
    solved: list[str] = []

    def noting() -> str:
        solved.append("dependency")
        return "solved"

    async def put_item(item_id: str, request: Request, extra: Any = Depends(noting)) -> PlainTextResponse:
        assert extra != "solved"
        return PlainTextResponse(f"{request.method} {item_id} {request.query_params['q']}", status_code=201)

    async def two(a: str, b: str, request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{a}/{b}")

    app.router.add_api_route("/items/{item_id}", put_item, methods=["PUT"], route_class_override=DirectRoute)
    app.router.add_api_route("/two/{a}/{b}", two, methods=["GET"], route_class_override=DirectRoute)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.put("/items/it-1?q=z", content=b"bytes")
        assert (answer.status_code, answer.text) == (201, "PUT it-1 z")
        assert client.get("/two/x/y").text == "x/y"
        assert client.post("/items/it-1").status_code == 405
    assert solved == []  # it gets no dependencies


def test_a_direct_route_answers_with_the_server_s_own_channels(store):
    """The endpoint's request reads the body and sends through the server's ``receive`` and
    ``send``; a streaming answer listens on ``receive`` for a disconnect while it streams."""
    sent: list[dict[str, Any]] = []
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        received.append("receive")
        if len(received) == 1:
            return {"type": "http.request", "body": b"profile bytes", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: cancelled once the answer is sent
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def put_item(item_id: str, request: Request) -> StreamingResponse:
        body = await request.body()
        await request.send_push_promise("/pushed")

        async def chunks() -> AsyncIterator[bytes]:
            yield item_id.encode()
            yield b" got " + body

        return StreamingResponse(chunks(), media_type="text/plain")

    route = DirectRoute("/items/{item_id}", put_item, methods=["PUT"])
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "PUT", "scheme": "http", "server": ("127.0.0.1", 80), "path": "/items/it-1", "root_path": "",
             "query_string": b"", "headers": [], "path_params": {"item_id": "it-1"},
             "extensions": {"http.response.push": {}}}  # fmt: skip
    asyncio.run(route.app(scope, receive, send))
    assert [message["type"] for message in sent] == [
        "http.response.push",
        "http.response.start",
        "http.response.body",
        "http.response.body",
        "http.response.body",
    ]
    assert sent[0]["path"] == "/pushed" and sent[1]["status"] == 200
    assert b"".join(message.get("body", b"") for message in sent[2:]) == b"it-1 got profile bytes"
    assert received == ["receive", "receive"]  # the body, then the listening for a disconnect


def test_a_direct_route_refuses_a_body_limit_of_its_own():
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("")

    with pytest.raises(AssertionError, match=r"^a DirectRoute's body limit is the server's \(middleware.BodyLimits\)$"):
        DirectRoute("/x", endpoint, max_body_size=10)
    assert DirectRoute("/x", endpoint).max_body_size is None


# -- JsonBodyRoute --------------------------------------------------------------------------------


class Slot(WireModel):
    when: int
    name: str = "-"


def _json_app(store: Store, *, on_free_store: bool) -> tuple[FastAPI, list[dict[str, Any]]]:
    """An app whose one route is a counted ``JsonBodyRoute``; the endpoint notes each call."""
    calls: list[dict[str, Any]] = []

    def endpoint(session_id: str, body: Slot, request: Request) -> JSONResponse:
        try:
            asyncio.get_running_loop()
            where = "loop"
        except RuntimeError:
            where = "thread"
        calls.append({"where": where, "thread": threading.current_thread().name})
        return JSONResponse({"session": session_id, "when": body.when, "name": body.name, "path": request.url.path})

    app = FastAPI()
    app.state.store = store
    app.router.add_api_route(
        "/v0/sessions/{session_id}/slot",
        endpoint,
        methods=["POST"],
        dependencies=[counted("slot")],
        route_class_override=JsonBodyRoute.counting("slot", on_free_store=on_free_store),
    )
    return app, calls


@pytest.fixture
def solving(monkeypatch) -> list[str | None]:
    """The content types of the requests FastAPI solves parameters for."""
    seen: list[str | None] = []
    solve = fastapi.routing.solve_dependencies

    async def noting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].headers.get("content-type"))
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", noting)
    return seen


QUICK = {"Content-Type": "application/json"}
FULL = {"Content-Type": "application/json; charset=utf-8"}
ANSWER = {"session": "s-1", "when": 5, "name": "n", "path": "/v0/sessions/s-1/slot"}


@pytest.mark.parametrize("on_free_store", [False, True])
def test_a_valid_json_body_is_answered_without_fastapi_s_solving_and_counted_once(store, solving, on_free_store):
    app, calls = _json_app(store, on_free_store=on_free_store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post("/v0/sessions/s-1/slot", content=b'{"when": 5, "name": "n"}', headers=QUICK)
        assert (answer.status_code, answer.json()) == (200, ANSWER)
    assert solving == []
    assert store.stats().get("slot") == 1
    assert [call["where"] for call in calls] == (["loop"] if on_free_store else ["thread"])
    if not on_free_store:
        assert calls[0]["thread"].startswith("songbird-request")


def test_on_a_busy_store_the_endpoint_hops_to_a_worker_thread(store, solving):
    app, calls = _json_app(store, on_free_store=True)
    with TestClient(app, base_url="http://127.0.0.1") as client, store.free_turn() as free:
        assert free  # this thread holds the store while the request is answered
        answer = client.post("/v0/sessions/s-1/slot", content=b'{"when": 5, "name": "n"}', headers=QUICK)
        assert (answer.status_code, answer.json()) == (200, ANSWER)
    assert [call["where"] for call in calls] == ["thread"] and calls[0]["thread"].startswith("songbird-request")
    assert solving == []
    assert store.stats().get("slot") == 1


def test_any_other_request_goes_through_fastapi_s_handler_and_is_counted_there(store, solving):
    app, calls = _json_app(store, on_free_store=True)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        url = "/v0/sessions/s-1/slot"
        full = client.post(url, content=b'{"when": 5, "name": "n"}', headers=FULL)
        assert (full.status_code, full.json()) == (200, ANSWER)
        assert solving == [FULL["Content-Type"]]
        for body in (b'{"when": "soon"}', b'{"name": "n"}', b"[1, 2]", b"", b"null"):
            solving.clear()
            refused = client.post(url, content=body, headers=QUICK)
            assert refused.status_code == 422, body
            assert solving == [QUICK["Content-Type"]], body
        solving.clear()
        bad_json = client.post(url, content=b'{"when": 5', headers=QUICK)
        assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == "json_invalid"
        assert solving == []  # FastAPI refuses bad JSON before solving (and counting)
        assert client.post(url, content=b'{"when": 5}').status_code == 422  # no content type: not JSON to FastAPI
    assert len(calls) == 1
    assert store.stats().get("slot") == 1 + 5 + 1


def test_a_json_body_route_class_is_named_and_set_by_its_operation():
    route_class = JsonBodyRoute.counting("upload", on_free_store=True)
    assert issubclass(route_class, JsonBodyRoute)
    assert (route_class.__name__, route_class.operation, route_class.on_free_store) == (
        "JsonBodyRoute_upload",
        "upload",
        True,
    )
    plain = JsonBodyRoute.counting("reference")
    assert (plain.__name__, plain.operation, plain.on_free_store) == ("JsonBodyRoute_reference", "reference", False)
    assert (JsonBodyRoute.operation, JsonBodyRoute.on_free_store) == ("", False)


def test_a_json_body_route_needs_an_endpoint_taking_a_body():
    def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({})

    with pytest.raises(AssertionError, match=r"^a JsonBodyRoute's endpoint takes a body$"):
        JsonBodyRoute.counting("x")("/x", endpoint, methods=["POST"])
