"""Build the clients a service uses, register their readiness checks, close them on shutdown.

Used inside each service's lifespan, so wiring happens once, at the edge of the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_shared import db
from nattery_shared.app import Readiness
from nattery_shared.influx import InfluxClient
from nattery_shared.rabbit import EventBus, event_source
from nattery_shared.redis import create_redis
from nattery_shared.settings import ServiceSettings


@dataclass
class Resources:
    pool: AsyncConnectionPool | None = None
    redis: Redis | None = None
    bus: EventBus | None = None
    influx: InfluxClient | None = None

    def as_state(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if v is not None}


@asynccontextmanager
async def open_resources(
    settings: ServiceSettings,
    readiness: Readiness,
    *,
    schema: str,
    postgres: bool = True,
    redis: bool = False,
    rabbit: bool = False,
    influx: bool = False,
) -> AsyncIterator[Resources]:
    res = Resources()
    try:
        if postgres:
            res.pool = db.create_pool(settings.postgres, schema=schema, name=settings.service_name)
            await db.open_pool(res.pool)
            pool = res.pool
            readiness.add("postgres", lambda: db.ping(pool))
        if redis:
            res.redis = create_redis(settings.redis)
            client = res.redis
            readiness.add("redis", lambda: client.ping())
        if rabbit:
            res.bus = EventBus(settings.rabbit, source=event_source(settings.service_name))
            res.bus.start()
            readiness.add("rabbitmq", res.bus.ping)
        if influx:
            res.influx = InfluxClient(settings.influx)
            readiness.add("influxdb", res.influx.ping)
        yield res
    finally:
        if res.bus is not None:
            await res.bus.close()
        if res.influx is not None:
            await res.influx.close()
        if res.redis is not None:
            await res.redis.aclose()
        if res.pool is not None:
            await res.pool.close()
