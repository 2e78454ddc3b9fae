"""Nattery integration service: app factory and lifespan (clients built once, handed to handlers as dependencies).

Areas (markets, weather, sites, ...) plug in through ``areas.Area`` (their jobs, webhook handlers,
routers and start hook); the plumbing here is the providers' HTTP clients, the job runner, the outbox
relay, connections and inbound webhooks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request, Response

from nattery_integration.areas import Area, discover
from nattery_integration.connections.crypto import SecretBox
from nattery_integration.connections.endpoints import router as connections_router
from nattery_integration.context import IntegrationContext
from nattery_integration.jobs.endpoints import router as jobs_router
from nattery_integration.jobs.registry import JobRegistry
from nattery_integration.jobs.service import JobRunner
from nattery_integration.providers.client import ProviderClients
from nattery_integration.providers.endpoints import router as providers_router
from nattery_integration.providers.errors import ProviderError
from nattery_integration.providers.specs import ProviderSpec, configured
from nattery_integration.settings import IntegrationSettings, get_settings
from nattery_integration.webhooks.endpoints import router as webhooks_router
from nattery_integration.webhooks.registry import WebhookHandler
from nattery_integration.webhooks.service import WebhookService
from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.errors import NatteryError
from nattery_shared.outbox import OutboxRelay
from nattery_shared.resources import open_resources

SCHEMA = "integration"
log = logging.getLogger(__name__)


def create_app(
    settings: IntegrationSettings | None = None,
    *,
    areas: Sequence[Area] | None = None,
    provider_specs: Mapping[str, ProviderSpec] | None = None,
    provider_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    discover_areas: bool = True,
) -> FastAPI:
    """``areas``: extra areas besides the discovered ones (tests); ``discover_areas=False`` leaves the
    discovered ones out (plumbing tests); ``provider_specs``: replaces the provider table (tests add a
    provider of their own); ``provider_transports``: inner transports."""
    settings = settings or get_settings()
    cfg = settings.integration
    all_areas = [*(discover() if discover_areas else ()), *(areas or ())]

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(
            settings, readiness, schema=SCHEMA, postgres=True, redis=True, rabbit=True, influx=False
        ) as res:
            assert res.pool and res.redis and res.bus
            replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            clients = ProviderClients(
                configured(cfg, dict(provider_specs) if provider_specs is not None else None),
                res.redis,
                prefix=cfg.redis_prefix,
                replica=replica,
                inner=provider_transports,
            )
            relay = OutboxRelay(res.pool, res.bus, keep_days=cfg.outbox_keep_days)
            ctx = IntegrationContext(
                settings=settings,
                pool=res.pool,
                redis=res.redis,
                bus=res.bus,
                clients=clients,
                relay=relay,
                secrets=SecretBox(cfg.secrets_keyring),
                replica=replica,
            )
            registry = JobRegistry()
            handlers: dict[str, WebhookHandler] = {}
            for area in all_areas:
                if area.jobs is not None:
                    for spec in area.jobs(ctx):
                        registry.register(spec)
                if area.webhook_handlers is not None:
                    for provider, handler in area.webhook_handlers(ctx).items():
                        if provider in handlers:
                            raise ValueError(f"two webhook handlers for provider {provider!r}")
                        handlers[provider] = handler
            runner = JobRunner(
                res.pool, registry, replica=replica, poll_s=cfg.jobs.poll_s, lease_s=cfg.jobs.lease_s
            )
            webhooks = WebhookService(res.pool, handlers, cfg.webhooks)
            for area in all_areas:
                if area.start is not None:
                    await area.start(ctx)
            ctx.spawn("outbox-relay", relay.run())
            if cfg.jobs.enabled:
                ctx.spawn("job-runner", runner.run())
            if cfg.webhooks.worker_enabled:
                ctx.spawn("webhook-worker", webhooks.run())
            try:
                yield {
                    **res.as_state(),
                    "ctx": ctx,
                    "clients": clients,
                    "relay": relay,
                    "job_runner": runner,
                    "webhooks": webhooks,
                }
            finally:
                for stoppable in (relay, runner, webhooks):
                    stoppable.stop()
                for task in ctx.tasks:
                    task.cancel()
                if ctx.tasks:
                    _done, stuck = await asyncio.wait(ctx.tasks, timeout=10)
                    for task in stuck:
                        log.error("task %s did not stop within 10 s", task.get_name())
                await clients.aclose()

    routers: list[APIRouter] = [providers_router, jobs_router, connections_router, webhooks_router]
    for area in all_areas:
        routers.extend(area.routers)
    app = create_service_app(
        settings=settings,
        title="Nattery integration service",
        description="Third-party providers (markets, flexibility, solar, weather), webhooks and notifications.",
        lifespan=lifespan,
        routers=routers,
    )
    nattery_error_handler = app.exception_handlers[NatteryError]

    async def provider_error(request: Request, err: Exception) -> Response:
        # A provider error that reaches an answer becomes the project's error (503, or 429 + Retry-After).
        assert isinstance(err, ProviderError)
        response = nattery_error_handler(request, err.to_http())
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(ProviderError, provider_error)
    return app
