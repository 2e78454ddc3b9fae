"""Settings on pydantic-settings.

Every variable starts with ``NATTERY_``; nested sections use ``__``: ``NATTERY_POSTGRES__DSN``,
``NATTERY_DEVICE__STALE_AFTER_S``. Each service subclasses :class:`ServiceSettings` and adds its own
section. Outside ``environment=development`` (and ``test``) a placeholder secret refuses to start.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that ship in examples and dev configs; never acceptable in staging or production.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "guest", "nattery-dev"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class PostgresSettings(BaseModel):
    dsn: SecretStr = SecretStr("postgresql://nattery:nattery-dev@127.0.0.1:5432/nattery")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)


class RedisSettings(BaseModel):
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")


class RabbitSettings(BaseModel):
    url: SecretStr = SecretStr("amqp://nattery:nattery-dev@127.0.0.1:5672/nattery")
    exchange: str = "nattery.events"
    dead_letter_exchange: str = "nattery.dlx"
    prefetch_count: int = Field(default=50, ge=1)
    delivery_limit: int = Field(default=5, ge=1)


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 1884
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5)


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    database: str = "nattery"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    batch_size: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)


class AuthSettings(BaseModel):
    jwks_url: str = "http://127.0.0.1:3004/.well-known/jwks.json"
    audience: str = "nattery"
    issuer: str = "nattery-user"
    jwks_cache_s: float = Field(default=300.0, gt=0)


class ServiceSettings(BaseSettings):
    """Base for every service's settings."""

    model_config = SettingsConfigDict(
        env_prefix="NATTERY_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    service_name: str = "nattery"
    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    rabbit: RabbitSettings = RabbitSettings()
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    auth: AuthSettings = AuthSettings()

    def secrets(self) -> dict[str, SecretStr | None]:
        """Secrets to guard; subclasses extend this with their own."""
        return {
            "postgres.dsn": self.postgres.dsn,
            "rabbit.url": self.rabbit.url,
            "mqtt.password": self.mqtt.password,
        }

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Self:
        if self.environment in (Environment.DEVELOPMENT, Environment.TEST):
            return self
        bad = [name for name, value in self.secrets().items() if value is not None and _is_placeholder(value)]
        if bad:
            raise ValueError(
                f"placeholder secrets are not allowed in {self.environment.value}: {', '.join(sorted(bad))}"
            )
        return self


def _is_placeholder(secret: SecretStr) -> bool:
    value = secret.get_secret_value()
    if value.lower() in PLACEHOLDER_SECRETS:
        return True
    # DSNs and URLs carry the password inside: check the userinfo part.
    if "://" in value and "@" in value:
        userinfo = value.split("://", 1)[1].split("@", 1)[0]
        password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
        return password.lower() in PLACEHOLDER_SECRETS
    return False
