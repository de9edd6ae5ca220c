"""Per-client token buckets (whylogs_songbird/server/ratelimits.py) as pure logic.

The buckets take an explicit ``now``; the request checks read the module's clock, replaced here by
a hand-driven one (the module's own seam), so every wait and ``Retry-After`` below is exact.
Requests are plain Starlette requests built from an ASGI scope: only their client address counts.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from whylogs_songbird.server import ratelimits
from whylogs_songbird.server.errors import ApiError
from whylogs_songbird.server.ratelimits import SLOT_COST_BYTES, ClientRateLimits, TokenBuckets, slot_cost

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/ratelimits.py")


class Clock:
    """The module's ``time``, with a monotonic clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ratelimits, "time", fake)
    return fake


def request(host: str | None) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    if host is not None:
        scope["client"] = (host, 40000)
    return Request(scope)


# -- slot_cost ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "cost"),
    [
        ([], 1),
        ([""], 1),
        (["x"], 1),
        (["x" * 4096], 1),  # the first block is in the slot's own token
        (["x" * 4097], 2),
        (["x" * 4096, "y"], 2),  # the texts are summed
        (["x" * 2048, "y" * 2048], 1),
        (["x" * 8192], 2),
        (["x" * 8193], 3),
        (["é" * 2048], 1),  # 4,096 UTF-8 bytes
        (["é" * 2049], 2),  # 4,098 UTF-8 bytes, though 2,049 characters
        (["\U0001f600" * 1024] * 64, 64),
        (["\ud800" * 1366], 2),  # a lone surrogate is counted (3 bytes), not refused
    ],
)
def test_slot_cost_is_one_plus_one_per_started_block_past_the_first(texts, cost):
    assert SLOT_COST_BYTES == 4096
    assert slot_cost(texts) == cost


# -- TokenBuckets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (1, 0), (1, -3), (float("nan"), 1)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError, match="needs a positive rate and burst, got") as caught:
        TokenBuckets(rate, burst)
    assert repr(rate) in str(caught.value) and repr(burst) in str(caught.value)


def test_the_smallest_bucket_is_allowed():
    buckets = TokenBuckets(0.001, 1)
    assert buckets.rate == 0.001 and buckets.burst == 1
    assert isinstance(TokenBuckets(2, 1).rate, float)
    assert TokenBuckets(1, 1).max_clients == 65_536 == ratelimits.MAX_CLIENTS


def test_a_new_client_starts_with_a_full_bucket():
    buckets = TokenBuckets(rate=2, burst=4)
    assert buckets.take("a", 4, now=10.0) == 0.0
    assert buckets.take("b", 1, now=10.0) == 0.0  # other clients have their own


def test_cost_equal_to_the_burst_is_taken_and_one_more_never_is():
    buckets = TokenBuckets(rate=2, burst=4)
    assert buckets.take("a", 5, now=0.0) == math.inf
    assert buckets.take("a", 4, now=0.0) == 0.0  # the refusal above took nothing
    assert buckets.take("a", 5, now=1e9) == math.inf


def test_a_refusal_says_how_long_until_the_tokens_are_back_and_takes_nothing():
    buckets = TokenBuckets(rate=2, burst=4)
    assert buckets.take("a", 3, now=0.0) == 0.0  # 1 left
    assert buckets.take("a", 4, now=0.0) == pytest.approx(1.5)  # 3 missing at 2 a second
    assert buckets.take("a", 2, now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", 1, now=0.0) == 0.0  # still the 1 left: refusals took nothing
    assert buckets.take("a", 1, now=0.0) == pytest.approx(0.5)


def test_tokens_exactly_enough_are_taken():
    buckets = TokenBuckets(rate=1, burst=3)
    assert buckets.take("a", 3, now=0.0) == 0.0
    assert buckets.take("a", 2, now=2.0) == 0.0  # exactly two refilled
    assert buckets.take("a", 1, now=2.0) == pytest.approx(1.0)


def test_buckets_refill_at_their_rate_up_to_the_burst():
    buckets = TokenBuckets(rate=2, burst=4)
    assert buckets.take("a", 4, now=0.0) == 0.0
    assert buckets.take("a", 1, now=0.25) == pytest.approx(0.25)  # half a token back
    assert buckets.take("a", 1, now=0.5) == 0.0  # one token in half a second
    assert buckets.take("a", 4, now=100.0) == 0.0  # full again after long idle, not more than full
    assert buckets.take("a", 1, now=100.0) == pytest.approx(0.5)


def test_the_time_of_a_refusal_counts_for_the_refill():
    buckets = TokenBuckets(rate=1, burst=2)
    assert buckets.take("a", 2, now=0.0) == 0.0
    assert buckets.take("a", 2, now=1.0) == pytest.approx(1.0)  # 1 token at t=1
    assert buckets.take("a", 2, now=2.0) == 0.0  # 2 tokens at t=2: refilled from t=1, not t=0 twice


def test_without_now_the_module_clock_is_read(clock: Clock):
    buckets = TokenBuckets(rate=1, burst=1)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.75)
    clock.now += 0.75
    assert buckets.take("a") == 0.0


def test_least_recently_used_clients_are_forgotten_past_max_clients():
    buckets = TokenBuckets(rate=1, burst=2, max_clients=2)
    buckets.take("a", 2, now=0.0)
    buckets.take("b", 2, now=0.0)
    # two clients: both remembered (empty)
    assert buckets.take("a", 1, now=0.0) == pytest.approx(1.0)
    assert buckets.take("b", 1, now=0.0) == pytest.approx(1.0)
    # "a" is now the least recently used: a third client pushes it out, "b" stays
    buckets.take("c", 1, now=0.0)
    assert buckets.take("b", 1, now=0.0) == pytest.approx(1.0)
    assert buckets.take("a", 2, now=0.0) == 0.0  # forgotten, that is full


def test_using_a_bucket_makes_it_recent():
    buckets = TokenBuckets(rate=1, burst=2, max_clients=2)
    buckets.take("a", 2, now=0.0)
    buckets.take("b", 2, now=0.0)
    buckets.take("a", 1, now=0.0)  # a refusal still counts as use
    buckets.take("c", 1, now=0.0)  # "b" goes
    assert buckets.take("a", 1, now=0.0) == pytest.approx(1.0)
    assert buckets.take("b", 2, now=0.0) == 0.0


# -- ClientRateLimits -------------------------------------------------------------------------------


def test_the_defaults_are_the_documented_ones():
    limits = ClientRateLimits.of(object())
    assert limits.sessions is not None and limits.slots is not None
    assert limits.sessions.rate == pytest.approx(1.0) and limits.sessions.burst == 1000  # 60 a minute
    assert limits.slots.rate == 50 and limits.slots.burst == 2000


def test_limits_come_from_the_config_and_a_zero_rate_turns_one_off():
    limits = ClientRateLimits.of(SimpleNamespace(session_rate=30, session_burst=3, slot_rate=5, slot_burst=7))
    assert limits.sessions is not None and limits.slots is not None
    assert limits.sessions.rate == pytest.approx(0.5) and limits.sessions.burst == 3
    assert limits.slots.rate == 5 and limits.slots.burst == 7
    off = ClientRateLimits.of(SimpleNamespace(session_rate=0, session_burst=3, slot_rate=0, slot_burst=7))
    assert off.sessions is None and off.slots is None
    for _ in range(5):
        off.check_session(request("10.0.0.1"))
        off.check_slots(request("10.0.0.1"), cost=100, count=100)


def test_sessions_past_the_burst_are_refused_with_retry_after(clock: Clock):
    limits = ClientRateLimits(session_rate=6, session_burst=2, slot_rate=1, slot_burst=1)  # one per 10 s
    limits.check_session(request("10.0.0.1"))
    limits.check_session(request("10.0.0.1"))
    with pytest.raises(ApiError) as refused:
        limits.check_session(request("10.0.0.1"))
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "10"}
    assert refused.value.message == (
        "This client created sessions faster than this server allows: 2 at once, then 6 a minute (--session-burst, "
        "--session-rate). Nothing was created; try again in 10 s, and reuse one session for many uploads."
    )
    limits.check_session(request("10.0.0.2"))  # another client is not held back
    clock.now += 2.5
    with pytest.raises(ApiError) as again:
        limits.check_session(request("10.0.0.1"))
    assert again.value.headers == {"Retry-After": "8"}  # 7.5 s, rounded up
    clock.now += 7.5
    limits.check_session(request("10.0.0.1"))


def test_one_ipv6_network_shares_a_bucket_and_no_client_address_is_one_client(clock: Clock):
    limits = ClientRateLimits(session_rate=60, session_burst=1, slot_rate=1, slot_burst=1)
    limits.check_session(request("2001:db8::1"))
    with pytest.raises(ApiError):
        limits.check_session(request("2001:db8::ffff"))
    limits.check_session(request("2001:db8:0:1::1"))  # the next /64
    limits.check_session(request(None))
    with pytest.raises(ApiError):
        limits.check_session(request(None))
    limits.check_session(request("unknown-but-not-the-same"))


def test_slots_past_the_burst_are_refused_with_retry_after(clock: Clock):
    limits = ClientRateLimits(session_rate=60, session_burst=1, slot_rate=2, slot_burst=10)
    limits.check_slots(request("10.0.0.1"), cost=10, count=3)
    with pytest.raises(ApiError) as refused:
        limits.check_slots(request("10.0.0.1"), cost=5, count=5)
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "3"}  # 2.5 s, rounded up
    assert refused.value.message == (
        "This client asked for upload slots faster than this server allows: 10 at once, then 2 a second "
        "(--slot-burst, --slot-rate; a slot carrying more than 4096 bytes of segment tags and alias counts once "
        "per 4096). Nothing was created; try again in 3 s."
    )
    limits.check_slots(request("10.0.0.2"), cost=10, count=10)  # another client has its own bucket
    clock.now += 2.5
    limits.check_slots(request("10.0.0.1"), cost=5, count=5)


def test_slots_costing_more_than_the_burst_are_refused_for_good(clock: Clock):
    limits = ClientRateLimits(session_rate=60, session_burst=1, slot_rate=2.5, slot_burst=10)
    with pytest.raises(ApiError) as refused:
        limits.check_slots(request("10.0.0.1"), cost=11, count=4)
    assert refused.value.status == 429
    assert refused.value.headers is None  # waiting would not help
    assert refused.value.message == (
        "This request asks for 4 upload slots worth 11 of this server's slot allowance, more than one client may "
        "ask for: 10 at once, then 2.5 a second (--slot-burst, --slot-rate; a slot carrying more than 4096 bytes "
        "of segment tags and alias counts once per 4096). Nothing was created; ask for fewer slots per request."
    )
    limits.check_slots(request("10.0.0.1"), cost=10, count=10)  # the refusal took nothing
