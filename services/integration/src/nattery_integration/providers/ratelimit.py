"""A token bucket per provider in Redis, shared by every replica (one Lua script, Redis's clock).

``RateLimit(requests=N, per_s=W, burst=B)`` means "never more than N requests in any W seconds": the
bucket holds at most B tokens and refills at (N - B) / W tokens per second, so in any window of W
seconds at most B + (N - B) = N requests start. Every attempt (retries included) takes a token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1] bucket; ARGV: refill tokens/s, capacity. Returns 0 when a token was taken, else the
# milliseconds until one will be there (nothing taken). TIME is Redis's clock, the same for all replicas.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now_ms
end
if now_ms > ts then
  tokens = math.min(capacity, tokens + (now_ms - ts) * rate / 1000)
  ts = now_ms
end
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return wait_ms
"""


@dataclass(frozen=True)
class RateLimit:
    requests: int
    per_s: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.burst < self.requests) or self.per_s <= 0:
            raise ValueError("rate limit needs 1 <= burst < requests and per_s > 0")

    @property
    def refill_per_s(self) -> float:
        return (self.requests - self.burst) / self.per_s


class RateLimitWaitTooLong(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"rate limit would make us wait {wait_s:.1f} s")
        self.wait_s = wait_s


class RedisTokenBucket:
    """``await bucket.acquire()`` returns once a token is ours (waiting as needed, at most ``max_wait_s``)."""

    def __init__(self, redis: Redis, key: str, limit: RateLimit, *, max_wait_s: float = 30.0) -> None:
        self._redis = redis
        self._key = key
        self.limit = limit
        self._max_wait_s = max_wait_s
        self._script = redis.register_script(_TAKE)

    async def try_take(self) -> float:
        """Take a token now if there is one (0.0), else the seconds until there will be one."""
        wait_ms = await self._script(keys=[self._key], args=[self.limit.refill_per_s, self.limit.burst])
        return int(wait_ms) / 1000

    async def acquire(self, max_wait_s: float | None = None) -> float:
        """Wait for a token; returns the seconds waited. Raises RateLimitWaitTooLong when it would take
        longer than ``max_wait_s`` (default: the bucket's)."""
        limit_s = self._max_wait_s if max_wait_s is None else max_wait_s
        waited = 0.0
        while (wait_s := await self.try_take()) > 0:
            if waited + wait_s > limit_s:
                raise RateLimitWaitTooLong(waited + wait_s)
            await asyncio.sleep(wait_s)
            waited += wait_s
        return waited
