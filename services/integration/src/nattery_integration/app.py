"""Nattery integration service: app factory and lifespan (clients built once, handed to handlers as dependencies)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from nattery_integration.settings import IntegrationSettings, get_settings
from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.resources import open_resources

SCHEMA = "integration"


def create_app(settings: IntegrationSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(
            settings, readiness, schema=SCHEMA, postgres=True, redis=False, rabbit=True, influx=False
        ) as resources:
            yield resources.as_state()

    return create_service_app(
        settings=settings,
        title="Nattery integration service",
        description="Third-party providers (markets, flexibility, solar, weather), webhooks and notifications.",
        lifespan=lifespan,
        routers=[],
    )
