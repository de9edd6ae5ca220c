"""ASGI middleware of the server: body limits (413) and network emulation (latency, fault
injection and request hooks). Added by ``create_app`` in that order, so a faulted request never
reaches the limits or a route.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whylogs_songbird.server.bundles import IMPORT_PATH, MAX_BUNDLE_BYTES
from whylogs_songbird.server.common import error_response
from whylogs_songbird.server.config import RequestHook, ServerConfig
from whylogs_songbird.server.faults import FaultInjector

UPLOAD_PATH_PREFIX = "/v0/uploads/"
#: After refusing a body as too large, read and drop up to this many more of its bytes (see _discard_body).
_DISCARD_BYTES = 16 * 1024 * 1024


class BodyTooLargeError(StarletteHTTPException):
    """Raised from ``receive`` when a request body passes its limit; answered with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimitMiddleware:
    """413 for bodies over the limit: uploads get ``max_upload_bytes``, everything else
    ``max_json_bytes``. Content-Length is checked first, then bytes are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        is_upload = path.startswith(UPLOAD_PATH_PREFIX)
        limit = self.config.max_upload_bytes if is_upload else self.config.max_json_bytes
        what = "profile" if is_upload else "JSON request body"
        message = f"The {what} is larger than this server's limit of {limit} bytes; " + (
            "start the server with a larger max_upload_bytes or upload a smaller profile."
            if is_upload
            else "send a smaller request."
        )
        if path == IMPORT_PATH:  # a bundle is spooled to disk, never held in memory
            limit = MAX_BUNDLE_BYTES
            message = f"The bundle is larger than this server's limit of {limit} bytes; split the session."
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "Content-Length is not a number.")(scope, receive, send)
                    return
                if declared > limit:
                    await _discard_body(receive)
                    await error_response(413, message, {"Connection": "close"})(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    if msg.get("more_body", False):
                        await _discard_body(receive)
                    raise BodyTooLargeError(message)
            return msg

        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await error_response(413, message, {"Connection": "close"})(scope, receive, send)


async def _discard_body(receive: Receive) -> None:
    """Read and drop the rest of a refused request body (at most ``_DISCARD_BYTES``).

    Closing a connection whose request bytes are still unread makes the kernel send a reset,
    which can destroy the 413 answer before the client reads it; a drained connection closes cleanly.
    """
    budget = _DISCARD_BYTES
    while budget >= 0:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            return
        budget -= len(msg.get("body", b""))


class NetworkEmulationMiddleware:
    """Delays API requests by ``latency_ms``, then runs the fault injector (``fault_rate``, see
    faults.py) and the ``request_hooks``. ``/healthz`` and ``/_local/...`` skip all of it.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.fault_hooks: list[RequestHook] = (
            [FaultInjector(config.fault_rate, config.fault_seed)] if config.fault_rate else []
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = str(scope.get("path", ""))
            if not (path == "/healthz" or path.startswith("/_local/")):
                if self.config.latency_ms:
                    await asyncio.sleep(self.config.latency_ms / 1000)
                for hook in (*self.fault_hooks, *self.config.request_hooks):
                    response = await hook(Request(scope, receive))
                    if response is not None:
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class RequestCounter:
    """How many HTTP requests are being answered right now (see :class:`InFlightMiddleware`)."""

    def __init__(self) -> None:
        self.in_flight = 0

    def busy(self) -> bool:
        return self.in_flight > 0


class InFlightMiddleware:
    """Counts the HTTP requests being answered in ``counter``, so background work can yield."""

    def __init__(self, app: ASGIApp, counter: RequestCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.counter.in_flight += 1  # only the event loop's thread touches it
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter.in_flight -= 1


__all__ = [
    "BodyLimitMiddleware",
    "BodyTooLargeError",
    "InFlightMiddleware",
    "NetworkEmulationMiddleware",
    "RequestCounter",
]
