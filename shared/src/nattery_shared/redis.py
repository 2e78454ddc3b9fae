"""Redis (cache, sessions, rate limits, fan-out). Nothing in Redis is the only copy of anything."""

from __future__ import annotations

from redis.asyncio import Redis

from nattery_shared.settings import RedisSettings


def create_redis(settings: RedisSettings) -> Redis:
    return Redis.from_url(
        settings.url.get_secret_value(),
        decode_responses=False,
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )


async def ping(redis: Redis) -> None:
    await redis.ping()
