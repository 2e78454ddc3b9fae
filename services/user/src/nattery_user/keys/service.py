"""The key ring: which key signs now, which keys are published, rotation without downtime.

Every replica reloads the ring from PostgreSQL every ``key_refresh_interval_s``. Rotation publishes a
new key ``signing_key_publish_lead_s`` before it starts signing (longer than the reload interval, so
every replica has it and serves it in the JWKS before any token carries its kid). Older keys stay in
the JWKS until the last token they signed has expired (access-token TTL plus a margin), then leave.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg_pool import AsyncConnectionPool

from nattery_shared.errors import DependencyUnavailable
from nattery_shared.retry import Backoff, RetryLoop
from nattery_user.keys import crypto, repository
from nattery_user.settings import UserSection

log = logging.getLogger(__name__)

# Covers verifier leeway and clock skew between replicas.
RETIRE_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    public_jwk: dict[str, Any]
    private_key: rsa.RSAPrivateKey
    activates_at: datetime
    retire_after: datetime | None


class KeyRing:
    def __init__(self, pool: AsyncConnectionPool, settings: UserSection) -> None:
        self._pool = pool
        self._settings = settings
        self._kek = settings.key_encryption_key_bytes()
        self._keys: list[SigningKey] = []  # ordered by activation
        self._decrypted: dict[str, rsa.RSAPrivateKey] = {}

    # --- reading ---------------------------------------------------------------------------------
    def signing_key(self, now: datetime | None = None) -> SigningKey:
        now = now or datetime.now(UTC)
        active = [k for k in self._keys if k.activates_at <= now]
        if not active:
            raise DependencyUnavailable("no signing key is active yet")
        return active[-1]

    def jwks(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {"keys": [k.public_jwk for k in self._keys if k.retire_after is None or k.retire_after > now]}

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]

    async def reload(self) -> None:
        async with self._pool.connection() as conn:
            rows = await repository.published_keys(conn, datetime.now(UTC))
        keys = []
        for row in rows:
            kid = row["kid"]
            private = self._decrypted.get(kid)
            if private is None:
                private = crypto.decrypt_private_key(bytes(row["private_key_encrypted"]), kid, self._kek)
                self._decrypted[kid] = private
            keys.append(SigningKey(kid, row["public_jwk"], private, row["activates_at"], row["retire_after"]))
        self._keys = keys
        live = {k.kid for k in keys}
        self._decrypted = {kid: key for kid, key in self._decrypted.items() if kid in live}

    # --- writing ---------------------------------------------------------------------------------
    async def ensure(self) -> bool:
        """Create the first key, or rotate when the signing key is older than the rotation period.
        Returns True when a key was created. Safe to call from every replica at once."""
        now = datetime.now(UTC)
        async with self._pool.connection() as conn, conn.transaction():
            await repository.lock_keys(conn)
            rows = await repository.published_keys(conn, now)
            if not rows:
                # Nobody holds a token yet: the first key signs at once.
                await self._insert_new(conn, activates_at=now)
                created = True
            else:
                newest = rows[-1]
                age = now - newest["activates_at"]
                created = False
                if age.total_seconds() >= self._settings.signing_key_rotate_after_s:
                    await self._rotate_locked(conn, now, self._settings.signing_key_publish_lead_s)
                    created = True
            await repository.delete_keys_retired_before(conn, now - timedelta(days=7))
        await self.reload()
        return created

    async def rotate(self, *, publish_lead_s: float | None = None) -> str:
        """Publish a new key now; it signs after ``publish_lead_s``. Returns its kid."""
        lead = self._settings.signing_key_publish_lead_s if publish_lead_s is None else publish_lead_s
        async with self._pool.connection() as conn, conn.transaction():
            await repository.lock_keys(conn)
            kid = await self._rotate_locked(conn, datetime.now(UTC), lead)
        await self.reload()
        return kid

    async def _rotate_locked(self, conn: Any, now: datetime, lead_s: float) -> str:
        activates_at = now + timedelta(seconds=lead_s)
        kid = await self._insert_new(conn, activates_at=activates_at)
        retire_after = activates_at + timedelta(seconds=self._settings.access_token_ttl_s) + RETIRE_MARGIN
        await repository.retire_keys_before(conn, kid=kid, retire_after=retire_after)
        log.info("signing key %s published; signs from %s", kid, activates_at.isoformat())
        return kid

    async def _insert_new(self, conn: Any, *, activates_at: datetime) -> str:
        kid = f"{activates_at:%Y%m%d}-{uuid.uuid4().hex[:8]}"
        private = await asyncio.to_thread(crypto.generate_private_key)
        await repository.insert_key(
            conn,
            kid=kid,
            public_jwk=crypto.public_jwk(private, kid),
            encrypted=crypto.encrypt_private_key(private, kid, self._kek),
            activates_at=activates_at,
        )
        return kid

    async def run_refresher(self) -> None:
        """Background task: reload the ring and rotate when due. A failure is logged once, and the
        recovery once; meanwhile the keys in memory keep signing and retries back off."""
        interval_s = self._settings.key_refresh_interval_s
        await RetryLoop(
            self.ensure,
            name="signing key refresh",
            logger=log,
            every_s=interval_s,
            backoff=Backoff(initial_s=min(1.0, interval_s), max_s=interval_s),
            wait_first=True,  # the lifespan loaded the ring at start-up
        ).run()
