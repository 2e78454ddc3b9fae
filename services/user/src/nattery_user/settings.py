"""Settings of the user service (``NATTERY_`` prefix; its own section is ``NATTERY_USER__*``)."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator

from nattery_shared.settings import Environment, ServiceSettings

# Development/test key-encryption key (32 zero-ish bytes, base64). Refused outside development and test.
DEV_KEY_ENCRYPTION_KEY = base64.b64encode(b"nattery-dev-key-encryption-key!!").decode()


class Argon2Settings(BaseModel):
    """Argon2id cost. Default: OWASP Password Storage Cheat Sheet baseline (m=19 MiB, t=2, p=1),
    ~30 ms per hash on the development machine. Hashes made with other parameters are upgraded at the
    next successful login."""

    time_cost: int = Field(default=2, ge=1)
    memory_cost_kib: int = Field(default=19456, ge=8192)
    parallelism: int = Field(default=1, ge=1)
    max_concurrent: int = Field(default=4, ge=1, description="hashes at once per process (bounds memory)")


class BruteForceSettings(BaseModel):
    """Failed-login counters in Redis, per account (email) and per client address."""

    window_s: int = Field(default=900, ge=1, description="failures are forgotten after this quiet time")
    account_free_failures: int = Field(default=3, ge=0, description="failures before back-off starts")
    account_lockout_failures: int = Field(default=10, ge=1)
    address_free_failures: int = Field(default=10, ge=0)
    address_lockout_failures: int = Field(default=50, ge=1)
    base_delay_s: float = Field(default=1.0, gt=0, description="first back-off; doubles per failure")
    max_delay_s: float = Field(default=60.0, gt=0)
    lockout_s: int = Field(default=900, ge=1)


class UserSection(BaseModel):
    """Options only the user service reads."""

    access_token_ttl_s: int = Field(default=900, ge=30)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    api_token_max_ttl_s: int = Field(default=365 * 24 * 3600, ge=60)
    # Base64 of 32 random bytes; encrypts signing keys at rest (AES-256-GCM).
    key_encryption_key: SecretStr = SecretStr(DEV_KEY_ENCRYPTION_KEY)
    signing_key_rotate_after_s: int = Field(default=30 * 24 * 3600, ge=60)
    # A new key is published this long before it signs, so every replica (and verifier) has it.
    signing_key_publish_lead_s: float = Field(default=60.0, ge=0)
    key_refresh_interval_s: float = Field(default=30.0, gt=0)
    argon2: Argon2Settings = Argon2Settings()
    brute_force: BruteForceSettings = BruteForceSettings()
    redis_prefix: str = "nattery:user:"
    demo_org_name: str = "Demo Energy"
    demo_admin_email: str = "admin@demo.nattery.local"
    consume_audit_events: bool = True

    def key_encryption_key_bytes(self) -> bytes:
        raw = base64.b64decode(self.key_encryption_key.get_secret_value())
        if len(raw) != 32:
            raise ValueError("user.key_encryption_key must be base64 of 32 bytes")
        return raw


class UserSettings(ServiceSettings):
    service_name: str = "user"
    port: int = 3004
    user: UserSection = UserSection()

    def secrets(self) -> dict[str, SecretStr | None]:
        return {**super().secrets(), "user.key_encryption_key": self.user.key_encryption_key}

    @model_validator(mode="after")
    def _check_key_encryption_key(self) -> Self:
        self.user.key_encryption_key_bytes()
        dev = self.user.key_encryption_key.get_secret_value() == DEV_KEY_ENCRYPTION_KEY
        if dev and self.environment not in (Environment.DEVELOPMENT, Environment.TEST):
            raise ValueError(
                f"the development user.key_encryption_key is not allowed in {self.environment.value}"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> UserSettings:
    return UserSettings()
