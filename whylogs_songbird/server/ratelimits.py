"""Per-client rate limits on creating sessions and asking for upload slots: token buckets.

Each client (its remote address; for IPv6 its /64, see :func:`common.client_key`) has a bucket of
``burst`` tokens that refills at ``rate`` tokens a second. A request takes its cost in tokens, or
is answered 429 with ``Retry-After`` (the whole seconds until enough tokens are back) and does
nothing. A session costs one token; an upload slot costs one, plus one per started
:data:`SLOT_COST_BYTES` of segment tags and alias past the first, so the bytes a client can
make the server keep are bounded too (a 1,000-reference batch costs 1,000).

The buckets live in each server process's memory (nothing is written per request): with
``--workers N`` one client may get up to N times the limits, and with several hosts, times the
hosts. At most :data:`MAX_CLIENTS` buckets are kept per limit; the least recently used go first
(a forgotten bucket is a full one, which is what it would have refilled to anyway).

Hand-written rather than the ``limits`` package: its in-memory storage (the only one without a
separate Redis or Memcached) starts a timer thread every few milliseconds while requests come
and keeps one entry per token for its moving window, and it has no token bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from starlette.requests import Request

from whylogs_songbird.server.common import client_key
from whylogs_songbird.server.errors import ApiError

#: An upload slot's tags and alias cost one more token per started block of this many bytes past the first.
SLOT_COST_BYTES = 4096
#: Clients whose buckets each limit remembers (per process).
MAX_CLIENTS = 65_536
#: Defaults: sessions per minute and at once; upload slots per second and at once.
DEFAULT_SESSION_RATE, DEFAULT_SESSION_BURST = 60, 1000
DEFAULT_SLOT_RATE, DEFAULT_SLOT_BURST = 50, 2000


def slot_cost(texts: Iterable[str]) -> int:
    """The tokens of one upload slot whose tag keys, tag values and alias are ``texts``."""
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    return 1 + max(0, math.ceil(size / SLOT_COST_BYTES) - 1)


class TokenBuckets:
    """One token bucket per client key: ``burst`` tokens, refilled at ``rate`` a second. Thread-safe."""

    def __init__(self, rate: float, burst: int, *, max_clients: int = MAX_CLIENTS) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, got {rate!r} and {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def take(self, key: str, cost: int = 1, now: float | None = None) -> float:
        """Take ``cost`` tokens of ``key``'s bucket: 0.0 when they were there, else the seconds
        until they will be (nothing is taken; ``math.inf`` when ``cost`` is more than the burst)."""
        if cost > self.burst:
            return math.inf
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


class ClientRateLimits:
    """The two limits of one server process; a rate of 0 turns that limit off."""

    def __init__(self, session_rate: float, session_burst: int, slot_rate: float, slot_burst: int) -> None:
        self.sessions = TokenBuckets(session_rate / 60, session_burst) if session_rate else None
        self.slots = TokenBuckets(slot_rate, slot_burst) if slot_rate else None

    @classmethod
    def of(cls, config: object) -> ClientRateLimits:
        """The limits a ServerConfig asks for."""
        return cls(
            getattr(config, "session_rate", DEFAULT_SESSION_RATE),
            getattr(config, "session_burst", DEFAULT_SESSION_BURST),
            getattr(config, "slot_rate", DEFAULT_SLOT_RATE),
            getattr(config, "slot_burst", DEFAULT_SLOT_BURST),
        )

    def check_session(self, request: Request) -> None:
        """Take a session's token for the request's client, or raise ApiError(429)."""
        if self.sessions is None:
            return
        wait = self.sessions.take(_client(request))
        if wait:
            raise ApiError(
                429,
                f"This client created sessions faster than this server allows: {self.sessions.burst} at once, then "
                f"{self.sessions.rate * 60:g} a minute (--session-burst, --session-rate). Nothing was created; try "
                f"again in {math.ceil(wait)} s, and reuse one session for many uploads.",
                {"Retry-After": str(math.ceil(wait))},
            )

    def check_slots(self, request: Request, cost: int, count: int) -> None:
        """Take ``cost`` tokens for ``count`` upload slots of the request's client, or raise ApiError(429)."""
        if self.slots is None:
            return
        wait = self.slots.take(_client(request), cost)
        if not wait:
            return
        limits = (
            f"{self.slots.burst} at once, then {self.slots.rate:g} a second (--slot-burst, --slot-rate; a slot "
            f"carrying more than {SLOT_COST_BYTES} bytes of segment tags and alias counts once per {SLOT_COST_BYTES})"
        )
        if math.isinf(wait):
            raise ApiError(
                429,
                f"This request asks for {count} upload slots worth {cost} of this server's slot allowance, more than "
                f"one client may ask for: {limits}. Nothing was created; ask for fewer slots per request.",
            )
        raise ApiError(
            429,
            f"This client asked for upload slots faster than this server allows: {limits}. Nothing was created; "
            f"try again in {math.ceil(wait)} s.",
            {"Retry-After": str(math.ceil(wait))},
        )


def _client(request: Request) -> str:
    return client_key(request.client.host) if request.client is not None else "unknown"


__all__ = ["SLOT_COST_BYTES", "ClientRateLimits", "TokenBuckets", "slot_cost"]
