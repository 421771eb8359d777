"""Per-key request rate (app/limits.py RateLimiter), on a clock the test moves (and, shared
between workers, on Redis's own clock)."""

import pytest
from redis.asyncio import Redis

from app import limits
from app.limits import RateLimiter
from tests.helpers.storage import REDIS_URL, fresh_redis_prefix

pytestmark = pytest.mark.storage_free


class Clock:
    """Stands in for the `time` module inside app.limits."""

    def __init__(self, now: float):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1_000.0)
    monkeypatch.setattr(limits, "time", clock)
    return clock


async def test_the_window_slides_and_says_how_long_to_wait(clock):
    limiter = RateLimiter(per_minute=3)
    for at in (1_000.0, 1_010.0, 1_020.0):
        clock.now = at
        assert await limiter.retry_after("key") is None
    clock.now = 1_030.0
    assert await limiter.retry_after("key") == 30  # the first request leaves the window at 1060
    clock.now = 1_059.5
    assert await limiter.retry_after("key") == 1  # never 0: rounded up
    clock.now = 1_060.0
    assert await limiter.retry_after("key") is None  # the first has left; this one takes its place
    assert await limiter.retry_after("key") == 10  # full again until the second leaves at 1070


async def test_refusals_are_not_counted(clock):
    limiter = RateLimiter(per_minute=1)
    assert await limiter.retry_after("key") is None
    for _ in range(50):
        clock.now += 1
        assert await limiter.retry_after("key") is not None
    clock.now = 1_060.0
    assert await limiter.retry_after("key") is None


async def test_keys_are_limited_separately(clock):
    limiter = RateLimiter(per_minute=1)
    assert await limiter.retry_after("alpha") is None
    assert await limiter.retry_after("beta") is None
    assert await limiter.retry_after("alpha") == 60


async def test_a_refund_gives_the_request_back(clock):
    limiter = RateLimiter(per_minute=2)
    assert await limiter.retry_after("key") is None
    assert await limiter.retry_after("key") is None
    await limiter.refund("key")
    assert await limiter.retry_after("key") is None
    assert await limiter.retry_after("key") == 60
    await limiter.refund("other")  # nothing recorded for it: nothing to give back, no error
    assert await limiter.retry_after("other") is None


@pytest.mark.parametrize("per_minute", [0, -1])
async def test_zero_or_less_means_unlimited(clock, per_minute):
    limiter = RateLimiter(per_minute=per_minute)
    assert all([await limiter.retry_after("key") is None for _ in range(1000)])
    await limiter.refund("key")


@pytest.mark.cluster
async def test_with_redis_workers_share_one_window_that_slides_on_redis_s_clock(clock):
    """Two workers' limiters on one Redis: one window between them, and a minute turning on a
    server's clock does not start a new count (a fixed per-minute count let 2x the limit through
    across the turn, and failed the shared-window test whenever its requests straddled one)."""
    redis = Redis.from_url(REDIS_URL)
    prefix = fresh_redis_prefix()
    a, b = RateLimiter(3, redis, prefix), RateLimiter(3, redis, prefix)
    try:
        clock.now = 1_259.9  # the servers' clocks about to turn a minute
        assert [await a.retry_after("key"), await b.retry_after("key")] == [None, None]
        assert await a.retry_after("key") is None
        clock.now = 1_260.1
        assert await b.retry_after("key") in (59, 60)  # until the first leaves the window
        assert await a.retry_after("key") in (59, 60)  # a refusal is not counted
        assert await b.retry_after("other") is None  # keys are limited separately
        await a.refund("key")
        assert await b.retry_after("key") is None
        assert await redis.zcard(f"{prefix}:rate:key") == 3
        assert 0 < await redis.ttl(f"{prefix}:rate:key") <= 61
    finally:
        await redis.aclose()
