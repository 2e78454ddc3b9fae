"""Verify user-service's RS256 access tokens locally (ARCHITECTURE §8).

The JWKS is fetched from user-service and cached; a token whose ``kid`` is unknown triggers one
refetch (key rotation), rate-limited so a flood of forged kids cannot hammer user-service.
Claims: ``sub, org, role, exp, iat, jti, aud``. Roles are ordered viewer < operator < admin.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nattery_shared.errors import DependencyUnavailable, Forbidden, Unauthorized
from nattery_shared.settings import AuthSettings


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    subject: str
    org_id: uuid.UUID
    role: Role
    token_id: str
    expires_at: int

    def has_role(self, role: Role) -> bool:
        return self.role.rank >= role.rank


class JwksCache:
    """Public keys by ``kid``; refetched after ``ttl_s`` or when an unknown kid shows up.

    Refetches are at most one per ``min_refetch_interval_s`` so a flood of forged kids cannot hammer
    user-service; user-service publishes a new key before it signs with it, so this never bites.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 300.0,
        min_refetch_interval_s: float = 1.0,
        fetch: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._fetch = fetch or self._fetch_http

    async def _fetch_http(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=3.0) as client:
            response = await client.get(self._url)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self._min_refetch_interval_s and self._keys:
                return
            try:
                jwks = await self._fetch()
            except (httpx.HTTPError, ValueError) as err:
                raise DependencyUnavailable("cannot fetch signing keys from user-service") from err
            keys = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("kty") == "RSA" and "kid" in jwk:
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256").key
            self._keys = keys
            self._fetched_at = time.monotonic()

    def knows(self, kid: str) -> bool:
        """The kid is in the last fetched JWKS (no fetch)."""
        return kid in self._keys

    async def key_for(self, kid: str) -> Any:
        expired = time.monotonic() - self._fetched_at > self._ttl_s
        if kid not in self._keys or expired:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("token signed with an unknown key")
        return key


class TokenVerifier:
    """Verifies access tokens; remembers up to ``cache_size`` already-verified tokens.

    A client sends the same access token with every request for up to 15 minutes, so the RS256 check
    (~50 µs with PyJWT) is done once per token: the cache is keyed by the token's SHA-256, returns the
    same Principal only while the token has not expired and its key is still published, and evicts
    the oldest entry when full. ``cache_size=0`` disables it.
    """

    def __init__(
        self, jwks: JwksCache, *, audience: str, issuer: str | None = None, cache_size: int = 10_000
    ) -> None:
        self._jwks = jwks
        self._audience = audience
        self._issuer = issuer
        self._cache_size = cache_size
        self._verified: dict[bytes, tuple[Principal, str]] = {}

    async def verify(self, token: str) -> Principal:
        if not self._cache_size:
            return (await self._verify(token))[0]
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None:
            principal, kid = hit
            if principal.expires_at > time.time() and self._jwks.knows(kid):
                return principal
            del self._verified[digest]
        principal, kid = await self._verify(token)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]  # oldest first (dicts keep insertion order)
        self._verified[digest] = (principal, kid)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise Unauthorized("malformed token") from err
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise Unauthorized("token must be RS256 with a kid")
        key = await self._jwks.key_for(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "aud", "jti"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as err:
            raise Unauthorized("token expired") from err
        except jwt.InvalidAudienceError as err:
            raise Unauthorized("token not meant for this audience") from err
        except jwt.PyJWTError as err:
            raise Unauthorized(f"invalid token: {err}") from err
        try:
            principal = Principal(
                subject=str(claims["sub"]),
                org_id=uuid.UUID(str(claims["org"])),
                role=Role(claims["role"]),
                token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except (KeyError, ValueError) as err:
            raise Unauthorized("token lacks a valid org or role") from err
        return principal, header["kid"]


_bearer = HTTPBearer(auto_error=False)


def get_verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.state.verifier
    return verifier


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    verifier: Annotated[TokenVerifier, Depends(get_verifier)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    principal = await verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller holds at least ``role``. Use via the aliases below."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"requires role {role.value}")
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


def build_verifier(settings: AuthSettings) -> TokenVerifier:
    return TokenVerifier(
        JwksCache(settings.jwks_url, ttl_s=settings.jwks_cache_s),
        audience=settings.audience,
        issuer=settings.issuer,
    )
