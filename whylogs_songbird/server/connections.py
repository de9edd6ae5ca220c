"""Defences against slow and idle connections, for the uvicorn that runs the server.

Without them a half-sent request line, a body that never arrives or a TCP connection that never
says a word stays open forever, and enough of them use up the process's file descriptors; then
every ``accept()`` fails and asyncio logs each failure with a traceback, many times a second.

- :class:`GuardedHttpToolsProtocol` (uvicorn's httptools protocol, plus timers): the request line and headers
  must arrive within ``header_timeout`` seconds of the connection (or of the first byte of a
  following request); while a body is being received, the client may stay silent at most
  ``body_timeout`` seconds between two reads. A connection that times out is answered 408 (or just
  closed, when it never sent a byte) and closed; the app sees a disconnect. Idle keep-alive
  connections are closed by uvicorn after ``timeout_keep_alive`` (5 s).
- A cap on open connections (``max_connections``, per process: each ``--workers`` process has its
  own): a connection over it is answered 503 and closed at once, so descriptors do not run out.
  The default keeps connections and the accept backlog (how many connections asyncio accepts in
  one go) within the process's descriptor limit. One client address (an IPv6 /64) may hold at
  most ``max_client_connections`` of them (default: half), so a single client cannot take every
  connection: others, and ``/healthz``, are still answered.
- :class:`RateLimitFilter`: repeated log records of one kind (accept errors, refused
  connections, timeouts) are logged at most once per interval, with a count of those left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from whylogs_songbird.server.common import client_key

logger = logging.getLogger("whylogs_songbird.server.connections")

#: Descriptors kept free for the database, profile files and the listening socket.
RESERVED_DESCRIPTORS = 64
#: Default bounds of the connection cap.
MIN_CONNECTIONS, MAX_DEFAULT_CONNECTIONS = 8, 1024
#: Default timeouts, in seconds.
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
#: uvicorn's listen backlog is also how many connections it accepts in one go.
MAX_BACKLOG = 2048


def descriptor_limit() -> int:
    """The process's soft limit on open file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 65536 if soft == resource.RLIM_INFINITY else int(soft)


def default_max_connections(limit: int | None = None) -> int:
    """Half of the descriptors left after :data:`RESERVED_DESCRIPTORS` (the other half is for the
    accept backlog), between :data:`MIN_CONNECTIONS` and :data:`MAX_DEFAULT_CONNECTIONS`."""
    limit = descriptor_limit() if limit is None else limit
    return max(MIN_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, (limit - RESERVED_DESCRIPTORS) // 2))


def backlog_for(max_connections: int, limit: int | None = None) -> int:
    """A listen backlog that, with ``max_connections`` open, does not exhaust the descriptor limit.

    asyncio accepts up to ``backlog`` connections each time the listening socket is ready, and a
    connection refused over the cap gives its descriptor back a few loop turns later: a quarter of
    the descriptors left over leaves room for those turns."""
    limit = descriptor_limit() if limit is None else limit
    return max(MIN_CONNECTIONS, min(MAX_BACKLOG, (limit - RESERVED_DESCRIPTORS - max_connections) // 4))


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts (seconds) and the connection cap of one server process."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = MAX_DEFAULT_CONNECTIONS
    max_client_connections: int = MAX_DEFAULT_CONNECTIONS // 2

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int):
            raise ValueError(f"max_connections must be a positive integer, got {self.max_connections!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be a positive integer, got {self.max_connections!r}")
        value = self.max_client_connections
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_client_connections must be a positive integer, got {value!r}")


class RateLimitFilter(logging.Filter):
    """Lets the first record of each kind through, then at most one per ``interval`` seconds; the next
    one let through says how many were left out. A kind is the logger name plus the message template."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:120])
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._state.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._state[key] = (last, suppressed + 1)
                return False
            self._state[key] = (now, 0)
            if len(self._state) > 1000:  # many kinds: forget the old ones
                self._state = {k: v for k, v in self._state.items() if now - v[0] < self.interval}
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more like this in the last {self.interval:g} s were not logged)"
        return True


#: One filter shared by the loggers that repeat under attack.
_RATE_LIMIT = RateLimitFilter()
RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn.error", logger.name)


def install_log_rate_limit() -> None:
    """Rate-limit the loggers that repeat under attack: asyncio's accept errors, uvicorn's protocol
    warnings and this module's refusals and timeouts (idempotent)."""
    for name in RATE_LIMITED_LOGGERS:
        target = logging.getLogger(name)
        if _RATE_LIMIT not in target.filters:
            target.addFilter(_RATE_LIMIT)


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\n\r\n"
    )
    return head.encode("ascii") + body


class CoalescingTransport:
    """A transport that joins the writes of one event-loop turn into one socket write.

    uvicorn writes a response's head and its body separately, and every write to a socket is a
    system call and a TCP segment, for the server and the client alike: joined, a small answer
    costs one. The joined bytes go out when the response is complete (:meth:`flush`, called by the
    protocol), or at the end of the loop turn for a response that streams. Everything else is
    the wrapped transport's (flow control included: it still sees every byte).
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write what is pending, in one call."""
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (its C parser) with header and body read timeouts and a cap on
    open connections.

    Use :func:`guarded_protocol` to get a subclass bound to a :class:`ConnectionLimits`. What the
    connection waits for is followed through the parser's callbacks: the request line and headers
    (``head``: from the connection, or from the first byte after the last answer), a body
    (``body``: from the end of the headers to the end of the message), or the app's answer.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    #: Open connections per client key (see :func:`common.client_key`), of the server this class serves.
    open_by_client: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client_key: str | None = None  # set while this connection counts against its client
        self._guard: asyncio.TimerHandle | None = None
        self._guard_kind = ""
        self._request_bytes = False  # bytes of the next request arrived
        self._reading = "head"  # what the parser reads now: "head", "body", or "" (a whole message read)
        self._unanswered = 0  # messages read whose answer is not complete (pipelining)

    # -- timers --

    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
            self._guard_kind = ""

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel_guard()
        self._guard_kind = kind
        self._guard = self.loop.call_later(seconds, self._on_timeout, kind)

    def _watch(self) -> None:
        """Arm the timer that fits what the connection waits for, after each event."""
        if self.transport is None or self.transport.is_closing():
            self._cancel_guard()
            return
        if self._reading == "body":
            self._arm("body", self.limits.body_timeout)  # re-armed by every read: an idle timeout
        elif self._reading == "head" and self._unanswered == 0:
            # Waiting for a request: the header deadline runs from the connection or the first byte
            # (an idle keep-alive connection is uvicorn's to close).
            if self._guard_kind != "header" and self.timeout_keep_alive_task is None:
                self._arm("header", self.limits.header_timeout)
        else:
            self._cancel_guard()

    def _on_timeout(self, kind: str) -> None:
        self._guard = None
        self._guard_kind = ""
        if self.transport is None or self.transport.is_closing():
            return
        if kind == "body" and self.flow is not None and self.flow.read_paused:
            self._arm("body", self.limits.body_timeout)  # the app is slow to read: not the client's fault
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if kind == "header" and not self._request_bytes:
            logger.info("closed a connection from %s that sent nothing for %g s", client, self.limits.header_timeout)
        else:
            if kind == "header":
                what = f"did not send its request line and headers within {self.limits.header_timeout:g} s"
                option = "--header-timeout"
            else:
                what = f"sent no body bytes for {self.limits.body_timeout:g} s"
                option = "--body-timeout"
            logger.warning("closed a connection from %s that %s", client, what)
            cycle = self.cycle
            if kind == "header" or (cycle is not None and not cycle.response_started):
                message = (
                    f"The request timed out: the client {what}, so the server closed the connection. "
                    f"Send requests without pauses, or start the server with a larger {option}."
                )
                self.transport.write(_raw_response(408, "Request Timeout", message))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() answers http.disconnect, its sends are dropped
            self.cycle.message_event.set()
        self.transport.close()

    # -- protocol and parser events --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(self._coalescing)  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            logger.warning(
                "refused a connection: %d are open, the limit of this process (--max-connections)",
                self.limits.max_connections,
            )
            message = (
                f"The server has {self.limits.max_connections} connections open, its limit; try again shortly. "
                "The server's operator can raise it with --max-connections."
            )
            transport.write(_raw_response(503, "Service Unavailable", message))
            transport.close()
            return
        key = client_key(self.client[0]) if self.client else ""
        held = self.open_by_client.get(key, 0)
        if held >= self.limits.max_client_connections:
            logger.warning(
                "refused a connection from %s: it has %d open, the limit per client of this process "
                "(--max-client-connections)",
                key,
                held,
            )
            message = (
                f"This client address has {held} connections open to the server, the limit per client; close "
                "idle ones or reuse them, and try again. The server's operator can raise it with "
                "--max-client-connections."
            )
            transport.write(_raw_response(503, "Service Unavailable", message))
            transport.close()
            return
        self.open_by_client[key] = held + 1
        self._client_key = key
        self._watch()

    def data_received(self, data: bytes) -> None:
        if data and self._reading == "head":
            self._request_bytes = True
        super().data_received(data)
        self._watch()

    def on_headers_complete(self) -> None:
        self._reading = "body"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = "head"
        self._unanswered += 1
        self._request_bytes = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._coalescing.flush()
        self._cancel_guard()
        self._unanswered = max(0, self._unanswered - 1)
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_guard()
        key, self._client_key = self._client_key, None
        if key is not None:
            left = self.open_by_client.get(key, 1) - 1
            if left > 0:
                self.open_by_client[key] = left
            else:
                self.open_by_client.pop(key, None)
        super().connection_lost(exc)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` subclass bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("SongbirdHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "open_by_client": {}})


def uvicorn_options(limits: ConnectionLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that apply ``limits``: the protocol and a bounded backlog."""
    return {"http": guarded_protocol(limits), "backlog": backlog_for(limits.max_connections)}


__all__ = [
    "ConnectionLimits",
    "GuardedHttpToolsProtocol",
    "RateLimitFilter",
    "backlog_for",
    "default_max_connections",
    "descriptor_limit",
    "guarded_protocol",
    "install_log_rate_limit",
    "uvicorn_options",
]
