"""Access tokens (RS256, signed with the key ring's current key) and opaque secrets.

Refresh tokens are ``nrt_<session id>_<secret>`` and API tokens ``nat_<secret>``: 256 random bits,
so a SHA-256 of the whole token is a safe stored form (no slow hash needed for high-entropy secrets).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from nattery_shared.auth import Role
from nattery_user.keys.service import KeyRing

REFRESH_PREFIX = "nrt_"
API_TOKEN_PREFIX = "nat_"


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in_s: int
    jti: str
    kid: str


class AccessTokenIssuer:
    def __init__(self, keyring: KeyRing, *, audience: str, issuer: str, ttl_s: int) -> None:
        self._keyring = keyring
        self._audience = audience
        self._issuer = issuer
        self.ttl_s = ttl_s

    def issue(
        self,
        *,
        user_id: uuid.UUID,
        org_id: uuid.UUID,
        role: Role,
        max_expires_at: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> IssuedAccessToken:
        key = self._keyring.signing_key()
        now = int(time.time())
        exp = now + self.ttl_s
        if max_expires_at is not None:
            exp = min(exp, int(max_expires_at))
        jti = uuid.uuid4().hex
        claims = {
            "sub": str(user_id),
            "org": str(org_id),
            "role": role.value,
            "aud": self._audience,
            "iss": self._issuer,
            "iat": now,
            "exp": exp,
            "jti": jti,
            **(extra or {}),
        }
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
        return IssuedAccessToken(token, exp - now, jti, key.kid)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token(session_id: uuid.UUID) -> str:
    return f"{REFRESH_PREFIX}{session_id.hex}_{secrets.token_urlsafe(32)}"


def session_of_refresh_token(token: str) -> uuid.UUID | None:
    if not token.startswith(REFRESH_PREFIX):
        return None
    sid, sep, secret = token[len(REFRESH_PREFIX) :].partition("_")
    if not sep or len(secret) < 32:
        return None
    try:
        return uuid.UUID(hex=sid)
    except ValueError:
        return None


def new_api_token() -> str:
    return f"{API_TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
