"""Live sessions in Redis (the fast path of refresh and revocation); PostgreSQL keeps the durable
record, and a session missing from Redis (flushed, evicted) is reloaded from it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

# KEYS[1] session hash; ARGV: old hash (hex), new hash (hex). 1 rotated, 0 not current, -1 unknown.
_ROTATE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'token_hash')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'token_hash', ARGV[2])
return 1
"""


class SessionStore:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._rotate: Any = redis.register_script(_ROTATE_SCRIPT)

    def _key(self, session_id: uuid.UUID) -> str:
        return f"{self._prefix}session:{session_id}"

    async def put(
        self,
        session_id: uuid.UUID,
        *,
        user_id: uuid.UUID,
        org_id: uuid.UUID,
        token_hash: bytes,
        expires_at: datetime,
    ) -> None:
        ttl_s = int((expires_at - datetime.now(UTC)).total_seconds())
        if ttl_s <= 0:
            return
        key = self._key(session_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={"user_id": str(user_id), "org_id": str(org_id), "token_hash": token_hash.hex()},
        )
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def rotate(self, session_id: uuid.UUID, old_hash: bytes, new_hash: bytes) -> int:
        result = await self._rotate(keys=[self._key(session_id)], args=[old_hash.hex(), new_hash.hex()])
        return int(result)

    async def delete(self, *session_ids: uuid.UUID) -> None:
        if session_ids:
            await self._redis.delete(*(self._key(s) for s in session_ids))
