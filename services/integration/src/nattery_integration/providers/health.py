"""Provider health shared by every replica (Redis hash per provider): last success, last error, the
breaker state the last replica to change it saw. ``GET /providers`` reads it; nothing here is the only
copy of anything (it is rebuilt by the next calls)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class ProviderHealth:
    def __init__(self, redis: Redis, *, prefix: str, replica: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.replica = replica

    def key(self, provider: str) -> str:
        return f"{self._prefix}provider:{provider}"

    async def _write(self, provider: str, mapping: Mapping[str, str]) -> None:
        # Health must never fail a provider call: a Redis hiccup only loses one health update.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hset(self.key(provider), mapping=dict(mapping))  # type: ignore[arg-type]

    async def success(self, provider: str, endpoint: str) -> None:
        await self._write(provider, {"last_success_at": _now(), "last_success_endpoint": endpoint})

    async def error(self, provider: str, endpoint: str, message: str) -> None:
        await self._write(
            provider,
            {"last_error_at": _now(), "last_error_endpoint": endpoint, "last_error": message[:500]},
        )

    async def breaker(self, provider: str, state: str) -> None:
        await self._write(
            provider, {"breaker_state": state, "breaker_changed_at": _now(), "breaker_replica": self.replica}
        )

    async def read(self, provider: str) -> dict[str, Any]:
        raw = await self._redis.hgetall(self.key(provider))
        return {_text(k): _text(v) for k, v in raw.items()}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
