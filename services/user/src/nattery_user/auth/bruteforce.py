"""Brute-force protection for logins: failure counters in Redis per account and per client address.

After ``free`` failures each further failure blocks the next attempt for a growing delay
(base * 2^n, capped); at ``lockout`` failures the key is locked for ``lockout_s``. Counters are
forgotten after ``window_s`` without failures, and an account's counter resets on a successful login
(an address's does not: one valid account must not launder an address's failures).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from nattery_user.settings import BruteForceSettings

# KEYS[1] counter hash; ARGV: now_ms, window_ms, free, lockout, base_ms, max_ms, lockout_ms
_FAIL_SCRIPT = """
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[3])
local lockout = tonumber(ARGV[4])
local blocked_until = 0
if fails >= lockout then
  blocked_until = now + tonumber(ARGV[7])
elseif fails > free then
  local delay = tonumber(ARGV[5]) * (2 ^ (fails - free - 1))
  blocked_until = now + math.min(delay, tonumber(ARGV[6]))
end
if blocked_until > 0 then
  redis.call('HSET', KEYS[1], 'blocked_until', blocked_until)
end
local ttl = tonumber(ARGV[2])
if blocked_until - now > ttl then ttl = blocked_until - now end
redis.call('PEXPIRE', KEYS[1], ttl)
return {fails, blocked_until}
"""


@dataclass(frozen=True)
class Failure:
    fails: int
    blocked_for_s: float
    locked_now: bool  # this failure reached the lockout threshold


class LoginLimiter:
    def __init__(self, redis: Redis, settings: BruteForceSettings, *, prefix: str) -> None:
        self._redis = redis
        self._s = settings
        self._prefix = prefix
        self._fail: Any = redis.register_script(_FAIL_SCRIPT)

    def account_key(self, email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        return f"{self._prefix}bf:account:{digest}"

    def address_key(self, address: str) -> str:
        return f"{self._prefix}bf:address:{address}"

    async def retry_after_s(self, *keys: str) -> int:
        """Seconds until the next attempt is allowed on all ``keys`` (0: allowed now)."""
        now_ms = time.time() * 1000
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "blocked_until")
        wait_ms = 0.0
        for value in await pipe.execute():
            if value is not None:
                wait_ms = max(wait_ms, float(value) - now_ms)
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0

    async def fail_account(self, email: str) -> Failure:
        return await self._record(
            self.account_key(email), self._s.account_free_failures, self._s.account_lockout_failures
        )

    async def fail_address(self, address: str) -> Failure:
        return await self._record(
            self.address_key(address), self._s.address_free_failures, self._s.address_lockout_failures
        )

    async def _record(self, key: str, free: int, lockout: int) -> Failure:
        now_ms = int(time.time() * 1000)
        fails, blocked_until = await self._fail(
            keys=[key],
            args=[
                now_ms,
                self._s.window_s * 1000,
                free,
                lockout,
                int(self._s.base_delay_s * 1000),
                int(self._s.max_delay_s * 1000),
                self._s.lockout_s * 1000,
            ],
        )
        blocked_for_s = max(0.0, (int(blocked_until) - now_ms) / 1000) if int(blocked_until) else 0.0
        return Failure(int(fails), blocked_for_s, int(fails) == lockout)

    async def reset_account(self, email: str) -> None:
        await self._redis.delete(self.account_key(email))
