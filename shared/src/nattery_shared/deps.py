"""Typed FastAPI dependencies for the clients built in a service's lifespan (``request.state``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_shared.influx import InfluxClient
from nattery_shared.rabbit import EventBus


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.state.pool
    return pool


def get_redis(request: Request) -> Redis:
    redis: Redis = request.state.redis
    return redis


def get_bus(request: Request) -> EventBus:
    bus: EventBus = request.state.bus
    return bus


def get_influx(request: Request) -> InfluxClient:
    influx: InfluxClient = request.state.influx
    return influx


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
RedisDep = Annotated[Redis, Depends(get_redis)]
BusDep = Annotated[EventBus, Depends(get_bus)]
InfluxDep = Annotated[InfluxClient, Depends(get_influx)]
