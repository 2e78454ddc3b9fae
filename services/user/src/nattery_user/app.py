"""Nattery user service: app factory and lifespan (clients built once, handed to handlers as dependencies)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.auth import JwksCache, TokenVerifier
from nattery_user.accounts.endpoints import router as accounts_router
from nattery_user.api_tokens.endpoints import router as api_tokens_router
from nattery_user.audit import consumers as audit_consumers
from nattery_user.audit.endpoints import router as audit_router
from nattery_user.auth.endpoints import router as auth_router
from nattery_user.context import SCHEMA, open_context
from nattery_user.keys.endpoints import router as keys_router
from nattery_user.preferences.endpoints import router as preferences_router
from nattery_user.settings import UserSettings, get_settings

__all__ = ["SCHEMA", "create_app"]

log = logging.getLogger(__name__)


def create_app(settings: UserSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        async with open_context(settings, readiness, rabbit=True) as (ctx, resources):
            try:
                await ctx.keyring.ensure()
            except Exception as err:  # PostgreSQL down at start: the refresher keeps trying
                log.warning("signing keys not loaded at start: %r", err)

            async def keys_ready() -> None:
                ctx.keyring.signing_key()

            readiness.add("signing_keys", keys_ready)
            refresher = asyncio.create_task(ctx.keyring.run_refresher(), name="signing-key-refresher")
            if settings.user.consume_audit_events and resources.bus is not None:
                await audit_consumers.start(resources.bus, ctx.pool)

            async def local_jwks() -> dict[str, Any]:
                return ctx.keyring.jwks()

            # This service verifies its own tokens from its key ring, not over HTTP from itself.
            verifier = TokenVerifier(
                JwksCache(settings.auth.jwks_url, ttl_s=5.0, min_refetch_interval_s=0.0, fetch=local_jwks),
                audience=settings.auth.audience,
                issuer=settings.auth.issuer,
            )
            try:
                yield {**resources.as_state(), "ctx": ctx, "verifier": verifier}
            finally:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher

    return create_service_app(
        settings=settings,
        title="Nattery user service",
        description="Orgs, users, roles, sessions, API tokens, settings and the audit log; issues JWTs.",
        lifespan=lifespan,
        routers=[
            keys_router,
            auth_router,
            accounts_router,
            preferences_router,
            api_tokens_router,
            audit_router,
        ],
    )
