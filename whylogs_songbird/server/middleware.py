"""The server's one ASGI middleware, :class:`EdgeMiddleware`, and what it applies to every HTTP
request: the host check and security headers (security.py), the count of requests in flight,
network emulation (latency, fault injection and request hooks), body limits (413), the answer to
an unexpected error (unexpected.py) and request durations (metrics.py). One layer with one
``send`` wrapper: each layer of ASGI middleware and each wrapper costs CPU on every request.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whylogs_songbird.server.bundles import IMPORT_PATH, MAX_BUNDLE_BYTES
from whylogs_songbird.server.common import error_response
from whylogs_songbird.server.config import RequestHook, ServerConfig
from whylogs_songbird.server.faults import FaultInjector
from whylogs_songbird.server.security import HostGate, secured
from whylogs_songbird.server.unexpected import UNEXPECTED_MESSAGE, RepeatedErrors

if TYPE_CHECKING:
    from whylogs_songbird.server.metrics import RequestDurations

logger = logging.getLogger("whylogs_songbird.server")

UPLOAD_PATH_PREFIX = "/v0/uploads/"
#: After refusing a body as too large, read and drop up to this many more of its bytes (see _discard_body).
_DISCARD_BYTES = 16 * 1024 * 1024


class BodyTooLargeError(StarletteHTTPException):
    """Raised from ``receive`` when a request body passes its limit; answered with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyLimits:
    """413 for bodies over the limit: uploads get ``max_upload_bytes``, a bundle import
    ``MAX_BUNDLE_BYTES``, everything else ``max_json_bytes``. Content-Length is checked first
    (:meth:`refusal`), then bytes are counted as they arrive (:meth:`limited`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def limit(self, path: str) -> int:
        """The most bytes a request body to ``path`` may have."""
        if path.startswith(UPLOAD_PATH_PREFIX):
            return self.config.max_upload_bytes
        return MAX_BUNDLE_BYTES if path == IMPORT_PATH else self.config.max_json_bytes

    def message(self, path: str) -> str:
        """What a 413 for a body to ``path`` says."""
        limit = self.limit(path)
        if path == IMPORT_PATH:  # a bundle is spooled to disk, never held in memory
            return f"The bundle is larger than this server's limit of {limit} bytes; split the session."
        if path.startswith(UPLOAD_PATH_PREFIX):
            return (
                f"The profile is larger than this server's limit of {limit} bytes; "
                "start the server with a larger max_upload_bytes or upload a smaller profile."
            )
        return f"The JSON request body is larger than this server's limit of {limit} bytes; send a smaller request."

    async def refusal(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to a request whose Content-Length is not a number (400) or over the limit
        (413, its body drained first), else None."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return error_response(400, "Content-Length is not a number.")
                path = str(scope.get("path", ""))
                if declared > self.limit(path):
                    await _discard_body(receive)
                    return error_response(413, self.message(path), {"Connection": "close"})
        return None

    def limited(self, scope: Scope, receive: Receive) -> Receive:
        """``receive``, raising :class:`BodyTooLargeError` once the body passes the limit."""
        path = str(scope.get("path", ""))
        limit = self.limit(path)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    if msg.get("more_body", False):
                        await _discard_body(receive)
                    raise BodyTooLargeError(self.message(path))
            return msg

        return limited_receive


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


class NetworkEmulation:
    """Delays API requests by ``latency_ms``, then runs the fault injector (``fault_rate``, see
    faults.py) and the ``request_hooks``. ``/healthz`` and ``/_local/...`` skip all of it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.fault_hooks: list[RequestHook] = (
            [FaultInjector(config.fault_rate, config.fault_seed)] if config.fault_rate else []
        )

    @staticmethod
    def wanted(config: ServerConfig) -> bool:
        """Whether ``config`` asks for any of it (else the edge leaves it out)."""
        return bool(config.latency_ms or config.fault_rate or config.request_hooks)

    async def answer(self, scope: Scope, receive: Receive) -> Response | None:
        """After the delay: a hook's answer instead of the app's, or None."""
        path = str(scope.get("path", ""))
        if path == "/healthz" or path.startswith("/_local/"):
            return None
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        for hook in (*self.fault_hooks, *self.config.request_hooks):
            response = await hook(Request(scope, receive))
            if response is not None:
                return response
        return None


class RequestCounter:
    """How many HTTP requests are being answered right now (counted by :class:`EdgeMiddleware`)."""

    def __init__(self) -> None:
        self.in_flight = 0

    def busy(self) -> bool:
        return self.in_flight > 0


class _Reply:
    """The one wrapper of an HTTP request's ``send``: notes whether the answer started and its
    status, and adds the security headers (:func:`security.secured`) to its start."""

    __slots__ = ("send_raw", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send_raw = send
        self.started = False
        self.status = 500  # an exception that escapes unanswered

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            message = secured(message)
        await self.send_raw(message)

    async def send_plain(self, message: Message) -> None:
        """Send without the security headers (the answer to an error of the edge itself)."""
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        await self.send_raw(message)


class EdgeMiddleware:
    """The server's own middleware, one layer with one ``send`` wrapper (each layer and wrapper
    costs CPU on every request). For an HTTP request, in this order:

    1. a ``Host`` the server does not answer to gets 421 (:class:`security.HostGate`);
    2. the request is counted in flight (``counter``, so background work can yield);
    3. network emulation, only when configured (:class:`NetworkEmulation`);
    4. body limits (:class:`BodyLimits`);
    5. the app; an exception it raises is logged by ``errors`` and answered 500 (unless its
       answer started: then the connection just ends), a client that went away is no error.

    Every answer gets the security headers; an error of steps 1-4 themselves is answered 500
    without them. With ``durations``, each request's seconds are observed by method, route
    template and status (:class:`metrics.RequestDurations`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: ServerConfig,
        gate: HostGate,
        counter: RequestCounter,
        errors: RepeatedErrors,
        durations: RequestDurations | None = None,
    ) -> None:
        self.app = app
        self.gate = gate
        self.counter = counter
        self.errors = errors
        self.durations = durations
        self.limits = BodyLimits(config)
        self.emulation = NetworkEmulation(config) if NetworkEmulation.wanted(config) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        reply = _Reply(send)
        try:
            await self._answer(scope, receive, reply)
        except ClientDisconnect:
            pass
        except Exception as exc:
            self.errors.report(exc)
            if not reply.started:
                await error_response(500, UNEXPECTED_MESSAGE)(scope, receive, reply.send_plain)
        finally:
            if self.durations is not None:
                self.durations.observe(scope, reply.status, perf_counter() - start)

    async def _answer(self, scope: Scope, receive: Receive, reply: _Reply) -> None:
        refused = self.gate.refusal(scope)
        if refused is not None:
            await refused(scope, receive, reply.send)
            return
        self.counter.in_flight += 1  # only the event loop's thread touches it
        try:
            answer = None
            if self.emulation is not None:
                answer = await self.emulation.answer(scope, receive)
            if answer is None:
                answer = await self.limits.refusal(scope, receive)
            if answer is not None:
                await answer(scope, receive, reply.send)
                return
            try:
                await self.app(scope, self.limits.limited(scope, receive), reply.send)
            except ClientDisconnect:  # the client went away (or was cut off): nobody to answer, nothing wrong here
                return
            except Exception as exc:
                self.errors.report(exc)
                if not reply.started:  # else the answer is under way: the connection just ends
                    await error_response(500, UNEXPECTED_MESSAGE)(scope, receive, reply.send)
        except ClientDisconnect:
            # the client hung up, or was cut off by a read timeout (connections.py), before its body
            # was read: nobody is left to answer, and it is not a server error
            logger.debug("the client went away before its request body was read")
        finally:
            self.counter.in_flight -= 1


__all__ = [
    "BodyLimits",
    "BodyTooLargeError",
    "EdgeMiddleware",
    "NetworkEmulation",
    "RequestCounter",
]
