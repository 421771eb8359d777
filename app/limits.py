"""Limits: request body size, per-key request rate. (Per-account concurrent calls: `app.calls.admission`.)"""

import asyncio
import json
import math
import secrets
import time
from collections import defaultdict, deque


class BodySizeLimitMiddleware:
    """Refuses HTTP request bodies over `max_bytes` with 413, without buffering them."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Stop reading: the app sees a disconnect and its answer is replaced by the 413.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal response_started
            if exceeded and not response_started:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps(
            {
                "code": "payload_too_large",
                "message": f"request bodies are limited to {self.max_bytes} bytes",
                "details": None,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


SLIDING_LOG = """
local now = redis.call('TIME')
local at = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - 60)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(oldest[2]) + 60 - at))
end
redis.call('ZADD', KEYS[1], at, ARGV[2])
redis.call('EXPIRE', KEYS[1], 61)
return 0
"""
"""One request against a key's sliding log in Redis, atomically and on Redis's clock (the
machines' clocks may differ): 0 if allowed (and recorded), else the seconds to wait."""


class RateLimiter:
    """At most `per_minute` requests per API key in any 60 s window (sliding log).

    In-process; with several server processes each enforces the limit on its own,
    so give it a Redis client (`SWITCHBOARD_REDIS_URL`) to share one window between them.
    """

    def __init__(self, per_minute: int, redis=None, redis_prefix: str = "switchboard"):
        self.per_minute = per_minute
        self._redis_prefix = redis_prefix
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = asyncio.Lock()
        self._redis = redis

    async def retry_after(self, key: str) -> int | None:
        """Record one request; None if allowed, else the seconds to wait."""
        if self.per_minute <= 0:
            return None
        if self._redis is not None:
            wait = await self._redis.eval(
                SLIDING_LOG, 1, self._redis_name(key), self.per_minute, secrets.token_hex(8)
            )
            return int(wait) or None
        now = time.monotonic()
        async with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(1, math.ceil(hits[0] + 60 - now))
            hits.append(now)
        return None

    async def refund(self, key: str) -> None:
        """Take back the request just recorded (it turned out not to count, e.g. a log-in that succeeded)."""
        if self.per_minute <= 0:
            return
        if self._redis is not None:
            await self._redis.zpopmax(self._redis_name(key))
            return
        async with self._lock:
            if self._hits[key]:
                self._hits[key].pop()

    def _redis_name(self, key: str) -> str:
        return f"{self._redis_prefix}:rate:{key}"
