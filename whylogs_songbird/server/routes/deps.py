"""Dependencies and helpers shared by the routers: the store, config and signer of the app,
operation counters, session lookups, and the checks every request body gets.

The dependencies are ``async`` and never block (the counters are added up in memory, see
:meth:`Store.count`): FastAPI runs a plain ``def`` dependency in the thread pool, a hop that
cost more than the work of the request."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from whylogs_songbird.models import ErrorResponse, WireModel
from whylogs_songbird.server.common import base_url as links_base
from whylogs_songbird.server.common import session_gone
from whylogs_songbird.server.config import ServerConfig
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.signing import UrlSigner
from whylogs_songbird.server.store import SessionRecord, Store, UploadRecord

#: The error answers every API route documents in OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [
        (400, "The request is invalid."),
        (401, "The API key is missing or not accepted."),
        (403, "Forbidden: wrong org for the key, a bad or expired upload URL, a quota, or no guest writes."),
        (404, "Unknown or claimed session, upload or profile."),
        (413, "The body is larger than the server's limit."),
        (429, "Too many requests from this client, or upload slots open in this session; see Retry-After."),
    ]
}


async def get_store(request: Request) -> Store:
    """The app's store (``app.state.store``)."""
    store: Store = request.app.state.store
    return store


async def get_config(request: Request) -> ServerConfig:
    """The app's configuration (``app.state.config``)."""
    config: ServerConfig = request.app.state.config
    return config


async def get_signer(request: Request) -> UrlSigner:
    """The app's upload-URL signer (``app.state.signer``)."""
    signer: UrlSigner = request.app.state.signer
    return signer


StoreDep = Annotated[Store, Depends(get_store)]
ConfigDep = Annotated[ServerConfig, Depends(get_config)]
SignerDep = Annotated[UrlSigner, Depends(get_signer)]


def counted(operation: str) -> Any:
    """A route dependency counting one call of ``operation`` in the store (see ``/_local/stats``)."""

    async def count(request: Request) -> None:
        request.app.state.store.count(operation)

    return Depends(count)


T = TypeVar("T")

#: The worker threads of :func:`in_thread`: as many as Starlette's own thread pool may use.
_THREADS = ThreadPoolExecutor(max_workers=40, thread_name_prefix="songbird-request")


async def in_thread(func: Callable[..., T], /, *args: Any) -> T:
    """``func(*args)`` in a worker thread, awaited, with the caller's context variables: what
    ``run_in_threadpool`` does for the hot routes, for about half of its CPU on the event loop
    (a plain executor hand-off, without anyio's capacity limiter and cancel scope).

    Like ``run_in_threadpool``, a cancelled caller (a shutdown's timeout) still waits for the
    call to end before the cancellation goes on: what the call does (a profile's bytes, then its
    row) is never left half-done under a store being closed."""
    call = functools.partial(contextvars.copy_context().run, func, *args)
    future = asyncio.get_running_loop().run_in_executor(_THREADS, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


def add_routes(target: APIRouter, router: APIRouter) -> None:
    """Add the routes of ``router`` to ``target`` (the app's own router, ``app.router``), in order.

    ``include_router`` would keep ``router`` as one nested router, which FastAPI matches twice on
    every request (once to choose it, then again inside it) with its own bookkeeping: about a
    tenth of a small request's CPU. Added directly, each route is matched once. The routes are the
    same either way: the routers here take no prefix, tags or dependencies from their inclusion.
    """
    target.routes.extend(router.routes)


class DirectRoute(APIRoute):
    """A route whose endpoint takes its path parameters and the request, nothing else: FastAPI
    matches and documents it as any other, but solves no parameters or dependencies for it (on a
    small upload that machinery costs about a tenth of the request's CPU), and it answers without
    FastAPI's wrapper of each request: two exit stacks (for dependencies with ``yield``, which it
    has none of) and a handling of exceptions that the app's own does the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.max_body_size is None, "a DirectRoute's body limit is the server's (middleware.BodyLimits)"
        handle = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request=request, **request.path_params)
            return response

        return handle


class JsonBodyRoute(APIRoute):
    """A route of a plain ``def`` endpoint taking its path parameters, ``body`` (one JSON model) and
    the request, counted as :attr:`operation` (its only dependency, ``counted(operation)``).

    FastAPI matches and documents it as any other. A request with ``Content-Type: application/json``
    whose body the model accepts is answered without FastAPI's parameter solving (the route's
    dependency is its count, taken here); any other request (another content type, bad JSON, a
    body the model refuses) goes through FastAPI's own handler, so it is counted and answered
    exactly as on every other route.

    With :attr:`on_free_store` (an endpoint whose blocking work is short calls of the metadata
    store), the quick path runs the endpoint on the event loop when the store is free this instant
    (``Store.free_turn``: the embedded store's SQLite, nobody at it), saving the hop to a worker
    thread, which costs more CPU than such a call; when it is not free, the endpoint hops as always,
    so the loop never waits for the store."""

    operation = ""
    on_free_store = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        endpoint = self.endpoint
        assert self.body_field is not None, "a JsonBodyRoute's endpoint takes a body"
        model: type[BaseModel] = self.body_field.field_info.annotation  # type: ignore[assignment]
        operation = self.operation
        on_free_store = self.on_free_store

        async def handle(request: Request) -> Response:
            if request.headers.get("content-type") == "application/json":
                raw = await request.body()  # kept by the request: FastAPI's handler reads it again
                try:
                    body = model.model_validate(json.loads(raw))
                except (ValueError, ValidationError):  # bad JSON (a ValueError) or an invalid body
                    body = None
                if body is not None:
                    store: Store = request.app.state.store
                    store.count(operation)
                    if on_free_store:
                        with store.free_turn() as free:
                            if free:
                                answer: Response = endpoint(body=body, request=request, **request.path_params)
                                return answer
                    call = functools.partial(endpoint, body=body, request=request, **request.path_params)
                    response: Response = await in_thread(call)
                    return response
            return await full(request)

        return handle

    @classmethod
    def counting(cls, operation: str, *, on_free_store: bool = False) -> type[JsonBodyRoute]:
        """The route class of an endpoint counted as ``operation`` (see :attr:`on_free_store`)."""
        return type(f"JsonBodyRoute_{operation}", (cls,), {"operation": operation, "on_free_store": on_free_store})


def base_url(config: ServerConfig, request: Request) -> str:
    """The base URL of links: ``public_url`` or the request's own."""
    return links_base(config.public_url, request)


def json_answer(model: WireModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.to_wire(), status_code=status)


def open_session(store: Store, session_id: str) -> SessionRecord:
    """The session of a guest operation (see :meth:`Store.guest_session`), or a 404 that reads the
    same whether it is unknown or claimed."""
    session = store.guest_session(session_id)
    if session is None:
        raise ApiError(404, f"{session_gone(session_id)}; start a new session with POST /v0/sessions.")
    return session


def _has_lone_surrogate(value: object) -> bool:
    """Whether a string anywhere in ``value`` (a model, list, tuple or dict of them) is not valid UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, BaseModel):
        return any(_has_lone_surrogate(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, list | tuple):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    return False


LONE_SURROGATE_MESSAGE = "The request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text."


def check_text(model: WireModel) -> None:
    """Refuse strings the store cannot keep (lone surrogates, which JSON escapes can carry).

    Only the string fields are looked at; the body is not serialized again."""
    if _has_lone_surrogate(model):
        raise ApiError(400, LONE_SURROGATE_MESSAGE)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One sentence naming what is wrong with a request (FastAPI's validation errors)."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ())]
        kind = err.get("type", "")
        if kind == "json_invalid":
            return "The request body is not valid JSON; send a JSON object as the songbird API contract describes."
        if kind == "string_unicode":  # a lone surrogate in a length-limited string field
            return LONE_SURROGATE_MESSAGE
        where = loc[0] if loc else "body"
        rest = ".".join(loc[1:])
        if where == "body":
            label = (
                f"field {rest}" if rest else "the request body (send a JSON object with Content-Type: application/json)"
            )
        elif where == "query":
            label = f"query parameter {rest}"
        elif where == "header":
            label = f"header {rest}"
        else:
            label = f"{where} {rest}".strip()
        parts.append(f"{label}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return (
        "The request is invalid: "
        + "; ".join(parts)
        + more
        + ". Send the JSON fields and parameters the songbird API contract describes."
    )


def upload_url(store: Store, config: ServerConfig, signer: UrlSigner, base: str, upload: UploadRecord) -> str:
    """The blob store's presigned URL (bytes go straight to it), or this server's own signed URL."""
    presigned = store.upload_url(upload, config.url_ttl_seconds)
    return presigned if presigned is not None else signer.upload_url(base, upload.id, upload.expires_at)


__all__ = [
    "ERROR_RESPONSES",
    "ConfigDep",
    "DirectRoute",
    "JsonBodyRoute",
    "add_routes",
    "in_thread",
    "SignerDep",
    "StoreDep",
    "base_url",
    "check_text",
    "counted",
    "describe_validation_errors",
    "get_store",
    "json_answer",
    "open_session",
    "upload_url",
]
