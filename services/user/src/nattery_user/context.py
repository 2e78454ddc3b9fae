"""Build the user service's context (clients, key ring, hasher, limiter) once, for the app or the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nattery_shared.app import Readiness
from nattery_shared.resources import Resources, open_resources
from nattery_user.auth.bruteforce import LoginLimiter
from nattery_user.auth.passwords import Passwords
from nattery_user.auth.sessions import SessionStore
from nattery_user.auth.tokens import AccessTokenIssuer
from nattery_user.deps import UserContext
from nattery_user.keys.service import KeyRing
from nattery_user.settings import UserSettings

SCHEMA = "users"


def build_context(settings: UserSettings, resources: Resources) -> UserContext:
    assert resources.pool is not None and resources.redis is not None
    keyring = KeyRing(resources.pool, settings.user)
    prefix = settings.user.redis_prefix
    return UserContext(
        settings=settings,
        pool=resources.pool,
        redis=resources.redis,
        keyring=keyring,
        issuer=AccessTokenIssuer(
            keyring,
            audience=settings.auth.audience,
            issuer=settings.auth.issuer,
            ttl_s=settings.user.access_token_ttl_s,
        ),
        passwords=Passwords(settings.user.argon2),
        limiter=LoginLimiter(resources.redis, settings.user.brute_force, prefix=prefix),
        sessions=SessionStore(resources.redis, prefix=prefix),
    )


@asynccontextmanager
async def open_context(
    settings: UserSettings, readiness: Readiness | None = None, *, rabbit: bool = False
) -> AsyncIterator[tuple[UserContext, Resources]]:
    async with open_resources(
        settings, readiness or Readiness(), schema=SCHEMA, postgres=True, redis=True, rabbit=rabbit
    ) as resources:
        yield build_context(settings, resources), resources
