"""Settings of the integration service (``NATTERY_`` prefix; its own section is ``NATTERY_INTEGRATION__*``).

Each provider has a section named after it, e.g. ``NATTERY_INTEGRATION__OCTOPUS__BASE_URL`` (default: the
real API), so tests and ``make run`` point connectors at local replay servers.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator

from nattery_shared.settings import Environment, ServiceSettings

# Development/test connection-secrets key (32 bytes, base64). Refused outside development and test.
DEV_SECRETS_KEY_ID = "dev-1"
DEV_SECRETS_KEY = base64.b64encode(b"nattery-dev-connection-secrets!!").decode()


class ProviderSettings(BaseModel):
    """Per-provider overrides; anything left None takes the provider table's default (providers/specs.py)."""

    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0, description="read timeout of one attempt")
    rate_limit_requests: int | None = Field(default=None, ge=1)
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1, le=10)


class SecretsKeyring(BaseModel):
    """AES-256-GCM keys for connection secrets: ``current`` encrypts, every listed key decrypts.

    Rotation: add a key, make it current, then run ``nattery-integration rekey``; remove the old key after.
    Env: ``NATTERY_INTEGRATION__SECRETS_KEYRING__CURRENT=k2``,
    ``NATTERY_INTEGRATION__SECRETS_KEYRING__KEYS='{"k1": "<base64 32 bytes>", "k2": "..."}'``.
    """

    current: str = DEV_SECRETS_KEY_ID
    keys: dict[str, SecretStr] = Field(
        default_factory=lambda: {DEV_SECRETS_KEY_ID: SecretStr(DEV_SECRETS_KEY)}
    )

    def key_bytes(self) -> dict[str, bytes]:
        out = {}
        for key_id, value in self.keys.items():
            raw = base64.b64decode(value.get_secret_value())
            if len(raw) != 32:
                raise ValueError(f"integration.secrets_keyring.keys.{key_id} must be base64 of 32 bytes")
            out[key_id] = raw
        return out

    @model_validator(mode="after")
    def _current_is_known(self) -> Self:
        if self.current not in self.keys:
            raise ValueError(f"integration.secrets_keyring.current {self.current!r} is not in keys")
        self.key_bytes()
        return self


class WebhookSettings(BaseModel):
    """Inbound webhooks (``POST /webhooks/{provider}``)."""

    # Per provider, the Standard Webhooks secret (``whsec_`` + base64). Env:
    # ``NATTERY_INTEGRATION__WEBHOOKS__SECRETS='{"axle": "whsec_..."}'``.
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    tolerance_s: int = Field(default=300, ge=1, description="timestamp must be within this of now")
    worker_enabled: bool = True
    worker_poll_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)


class JobSettings(BaseModel):
    enabled: bool = True
    poll_s: float = Field(default=1.0, gt=0, description="how often a replica looks for due jobs")
    lease_s: float = Field(default=300.0, gt=0)


class IntegrationSection(BaseModel):
    """Options only the integration service reads."""

    octopus: ProviderSettings = ProviderSettings()
    elexon: ProviderSettings = ProviderSettings()
    modo: ProviderSettings = ProviderSettings()
    entsoe: ProviderSettings = ProviderSettings()
    open_meteo: ProviderSettings = ProviderSettings()
    secrets_keyring: SecretsKeyring = SecretsKeyring()
    webhooks: WebhookSettings = WebhookSettings()
    jobs: JobSettings = JobSettings()
    redis_prefix: str = "nattery:integration:"
    outbox_keep_days: float = Field(default=7.0, gt=0)

    def provider(self, name: str) -> ProviderSettings:
        value = getattr(self, name, None)
        return value if isinstance(value, ProviderSettings) else ProviderSettings()


class IntegrationSettings(ServiceSettings):
    service_name: str = "integration"
    port: int = 3005
    integration: IntegrationSection = IntegrationSection()

    def secrets(self) -> dict[str, SecretStr | None]:
        own: dict[str, SecretStr | None] = {
            f"integration.webhooks.secrets.{name}": value
            for name, value in self.integration.webhooks.secrets.items()
        }
        return {**super().secrets(), **own}

    @model_validator(mode="after")
    def _refuse_dev_key(self) -> Self:
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return self
        for key_id, value in self.integration.secrets_keyring.keys.items():
            if value.get_secret_value() == DEV_SECRETS_KEY:
                raise ValueError(
                    f"the development integration.secrets_keyring key {key_id!r} is not allowed in "
                    f"{self.environment.value}"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> IntegrationSettings:
    return IntegrationSettings()
