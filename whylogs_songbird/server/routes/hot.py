"""The two requests of every upload, answered without FastAPI's per-request machinery.

Each upload is one slot request (``POST /v0/sessions/{id}/upload``) and one ``PUT
/v0/uploads/{id}``. FastAPI's routing, dependency solving and exception wrapping cost about
0.5 ms of CPU per request here, more than either handler does. :class:`HotRoutes` is the
innermost middleware, so the host check, the body limits, latency and fault emulation and the
in-flight count still apply; it recognises exactly these two requests and calls the same route
functions FastAPI would, with the same counts in ``/_local/stats``. Anything it is not sure of (a
body that is not a valid ``LogAsyncRequest`` in JSON, another content type, a ``root_path``) goes
on to FastAPI with the body it already read, so every answer stays the one FastAPI gives.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whylogs_songbird.models import LogAsyncRequest
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.routes.sessions import create_dataset_profile_upload
from whylogs_songbird.server.routes.uploads import put_upload

_SLOT = re.compile(r"/v0/sessions/([^/]+)/upload")
_PUT = re.compile(r"/v0/uploads/([^/]+)")


class HotRoutes:
    """Answer slot POSTs and PUTs directly; pass every other request to ``app`` (see the module doc)."""

    def __init__(self, app: ASGIApp, fastapi: Any) -> None:
        self.app = app
        self.fastapi = fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "PUT" and (match := _PUT.fullmatch(path)):
                await self._put(match.group(1), scope, receive, send)
                return
            if method == "POST" and (match := _SLOT.fullmatch(path)) and _is_json(scope):
                await self._slot(match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _put(self, upload_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        self.fastapi.state.store.count("put")
        query = request.query_params
        try:
            response = await put_upload(upload_id, request, query.get("expires"), query.get("signature"))
        except ApiError as exc:
            response = await self.fastapi.exception_handlers[ApiError](request, exc)
        await response(scope, receive, send)

    async def _slot(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its body arrived: there is no one to answer
        try:
            parsed = LogAsyncRequest.model_validate_json(body)
        except ValidationError:
            # FastAPI words the 400 for a body it cannot use
            await self.app(scope, _replay(body, receive), send)
            return
        request = Request(scope, _replay(body, receive))
        self.fastapi.state.store.count("upload")
        try:
            response = await run_in_threadpool(create_dataset_profile_upload, session_id, parsed, request)
        except ApiError as exc:
            response = await self.fastapi.exception_handlers[ApiError](request, exc)
        await response(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then whatever ``receive`` does (a disconnect)."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


__all__ = ["HotRoutes"]
