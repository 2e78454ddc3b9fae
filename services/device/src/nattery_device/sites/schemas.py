"""Site API models. Safety limits are the contract's :class:`SafetyLimits` (the bridge enforces them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nattery_contracts.mqtt import SafetyLimits, Slug
from nattery_shared.validation import Text


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown IANA timezone {value!r}") from err
    return value


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A site's slug is its MQTT username: it must never be a broker service account (provisioning it would
# replace that account's password, and the broker's site guard exempts service accounts).
RESERVED_SLUGS = frozenset({"device-service"})


def _not_reserved(value: str) -> str:
    if value in RESERVED_SLUGS:
        raise ValueError(f"slug {value!r} is reserved for a broker service account")
    return value


class SiteCreate(_In):
    slug: Slug
    name: Text = Field(min_length=1, max_length=200)
    location: Text | None = Field(default=None, max_length=500)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    timezone: Text = Field(default="UTC", max_length=64, examples=["Europe/London"])
    safety_limits: SafetyLimits

    _tz = field_validator("timezone")(_check_timezone)
    _slug = field_validator("slug")(_not_reserved)


class SiteUpdate(_In):
    name: Text | None = Field(default=None, min_length=1, max_length=200)
    location: Text | None = Field(default=None, max_length=500)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    timezone: Text | None = Field(default=None, max_length=64)
    safety_limits: SafetyLimits | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("name", "timezone", "safety_limits", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Omit a field to keep it; these columns cannot be cleared (an explicit null reached the
        # NOT NULL column: a 500 the schema fuzzer found).
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class Site(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    slug: str
    name: str
    location: str | None
    latitude: float | None
    longitude: float | None
    timezone: str
    safety_limits: SafetyLimits
    mqtt_username: str
    mqtt_revoked: bool
    created_at: datetime
    updated_at: datetime


class MqttCredentials(BaseModel):
    username: str
    password: str = Field(description="shown once; only its hash is kept (in the broker's password file)")
    topic_prefix: str


class ProvisionedSite(Site):
    mqtt: MqttCredentials
