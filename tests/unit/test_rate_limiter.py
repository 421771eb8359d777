"""Per-key request rate (app/limits.py RateLimiter), on a clock the test moves."""

import pytest

from app import limits
from app.limits import RateLimiter

pytestmark = pytest.mark.storage_free


class Clock:
    """Stands in for the `time` module inside app.limits."""

    def __init__(self, now: float):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class CountingRedis:
    """The three Redis commands the limiter uses, on a dict (no server: the real one is
    exercised by the PostgreSQL + Redis leg's server tests)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.expiries: dict[str, int] = {}

    async def incr(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    async def decr(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) - 1
        return self.counts[name]

    async def expire(self, name: str, seconds: int) -> None:
        self.expiries[name] = seconds


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


async def test_with_redis_the_count_is_per_clock_minute_under_the_prefix(clock):
    redis = CountingRedis()
    limiter = RateLimiter(per_minute=2, redis=redis, redis_prefix="tenant-a")
    clock.now = 1_200.0 + 15  # minute 20, 15 s in
    assert await limiter.retry_after("key") is None
    assert await limiter.retry_after("key") is None
    assert await limiter.retry_after("key") == 45  # until the next clock minute
    assert redis.counts == {"tenant-a:rate:key:20": 3}
    assert redis.expiries == {"tenant-a:rate:key:20": 120}  # set once, when the count starts
    await limiter.refund("key")
    assert redis.counts["tenant-a:rate:key:20"] == 2
    clock.now = 1_260.0  # the next minute starts a new count
    assert await limiter.retry_after("key") is None
    assert redis.counts["tenant-a:rate:key:21"] == 1
