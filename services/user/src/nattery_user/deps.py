"""The user service's clients, built once in the lifespan and handed to handlers as one typed dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from nattery_user.auth.bruteforce import LoginLimiter
from nattery_user.auth.passwords import Passwords
from nattery_user.auth.sessions import SessionStore
from nattery_user.auth.tokens import AccessTokenIssuer
from nattery_user.keys.service import KeyRing
from nattery_user.settings import UserSettings


@dataclass(frozen=True)
class UserContext:
    settings: UserSettings
    pool: AsyncConnectionPool
    redis: Redis
    keyring: KeyRing
    issuer: AccessTokenIssuer
    passwords: Passwords
    limiter: LoginLimiter
    sessions: SessionStore


def get_context(request: Request) -> UserContext:
    ctx: UserContext = request.state.ctx
    return ctx


def get_keyring(request: Request) -> KeyRing:
    return get_context(request).keyring


def client_address(request: Request) -> str:
    # uvicorn already replaced the peer with X-Forwarded-For when the peer is a trusted proxy
    # (forwarded_allow_ips, 127.0.0.1 by default: the local nginx gateway).
    return request.client.host if request.client else "unknown"


def user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


ContextDep = Annotated[UserContext, Depends(get_context)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
ClientAddressDep = Annotated[str, Depends(client_address)]
UserAgentDep = Annotated[str | None, Depends(user_agent)]
