"""Fault injection: answer a reproducible fraction of API requests the way a failing server does.

Off unless ``ServerConfig.fault_rate`` is above 0 (``--fault-rate`` on the command line). A
:class:`FaultInjector` is a request hook (see ``config.RequestHook``), so it runs in the app's
middleware *before* any route: a faulted request has no effect at all (a faulted PUT stores
nothing, a faulted POST creates no upload slot), which makes retrying it safe.

Only the songbird API is faulted (every path under ``/v0/``: the seven operations and the
presigned PUT); ``/healthz``, ``/_local/...``, the observatory pages and static files never are.
Each fault is one of:

- ``500`` and ``503``: a JSON error answer, as a crashed or overloaded server gives;
- ``429``: rate limited, with ``Retry-After: 0`` or ``1``;
- ``drop``: the connection is closed with no HTTP answer at all (no status line).

Decisions come from a ``random.Random(seed)`` under a lock: the same seed gives the same sequence
of decisions (which request gets which decision follows the order requests arrive in). Every
injected fault is counted in the store's counters as ``fault_<kind>`` (see ``/_local/stats``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from whylogs_songbird.server.common import error_response

logger = logging.getLogger("whylogs_songbird.server")

#: The kinds of fault, picked with equal chance.
FAULT_KINDS: tuple[str, ...] = ("500", "503", "429", "drop")
#: Requests under this path are faulted; nothing else is.
FAULTED_PATH_PREFIX = "/v0/"


class DroppedConnection(Response):
    """Not an answer: closes the client's connection without sending a single byte back.

    ASGI has no message for this, so the transport is taken from uvicorn's request cycle, of
    which ``receive`` is a bound method. Under a server where it cannot be found, a 503 is
    answered instead.
    """

    def __init__(self) -> None:
        super().__init__(status_code=503)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(receive, "__self__", None)
        transport: Any = getattr(cycle, "transport", None)
        # Duck-typed: uvloop's transports close like asyncio's but do not subclass BaseTransport.
        if not callable(getattr(transport, "close", None)):
            logger.warning("fault injection: cannot drop a connection under this server; answering 503 instead")
            await error_response(503, "Injected fault (a dropped connection, emulated as 503).")(scope, receive, send)
            return
        transport.close()
        # Let the server see the connection go before the app returns, so it neither answers
        # "500: the app sent no response" nor logs that as an error.
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)


def check_fault_rate(rate: Any) -> float:
    """``rate`` as a float, or ValueError unless it is a number from 0 to 1."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(f"fault_rate must be a number from 0 to 1, got {rate!r}")
    return float(rate)


class FaultInjector:
    """A request hook answering a seeded fraction ``rate`` of API requests with a fault.

    >>> ServerConfig(fault_rate=0.3, fault_seed=7)                      # doctest: +SKIP
    >>> ServerConfig(request_hooks=[FaultInjector(1.0, kinds=("drop",))])  # doctest: +SKIP
    """

    def __init__(self, rate: float, seed: int | None = None, kinds: Sequence[str] = FAULT_KINDS) -> None:
        self.rate = check_fault_rate(rate)
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if not kinds or unknown:
            raise ValueError(f"fault kinds must be some of {list(FAULT_KINDS)}, got {list(kinds)!r}")
        self.seed = seed
        self.kinds = tuple(kinds)
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultInjector(rate={self.rate}, seed={self.seed!r}, kinds={self.kinds!r})"

    def decide(self) -> tuple[str, str] | None:
        """The next decision: None (no fault) or ``(kind, retry_after)``."""
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            return self._random.choice(self.kinds), self._random.choice(("0", "1"))

    async def __call__(self, request: Request) -> Response | None:
        path = str(request.scope.get("path", ""))
        if not path.startswith(FAULTED_PATH_PREFIX):
            return None
        decision = self.decide()
        if decision is None:
            return None
        kind, retry_after = decision
        _count(request, f"fault_{kind}")
        logger.debug("fault injection: %s for %s %s", kind, request.method, path)
        said = f"Injected fault (fault rate {self.rate:g})"
        if kind == "drop":
            return DroppedConnection()
        if kind == "429":
            return error_response(
                429, f"{said}: too many requests; retry after {retry_after} s.", {"Retry-After": retry_after}
            )
        if kind == "503":
            return error_response(503, f"{said}: the server is unavailable; retry later.")
        return error_response(500, f"{said}: the server failed; retry later.")


def _count(request: Request, name: str) -> None:
    """Count in the app's store (``app.state.store``), so ``/_local/stats`` shows it."""
    store: Any = getattr(getattr(request.scope.get("app"), "state", None), "store", None)
    if store is not None:
        store.count(name)
