from __future__ import annotations

from enum import StrEnum
from zoneinfo import available_timezones

from pydantic import BaseModel, Field, field_validator

from nattery_contracts.events import AlertSeverity


class Units(StrEnum):
    METRIC = "metric"
    IMPERIAL = "imperial"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEBHOOK = "webhook"


DEFAULT_NOTIFICATIONS: dict[AlertSeverity, list[Channel]] = {
    AlertSeverity.INFO: [],
    AlertSeverity.WARNING: [Channel.EMAIL],
    AlertSeverity.CRITICAL: [Channel.EMAIL, Channel.SMS],
}


class UserPreferences(BaseModel):
    timezone: str = Field(default="UTC", description="IANA name, e.g. Europe/London")
    units: Units = Units.METRIC
    notifications: dict[AlertSeverity, list[Channel]] = Field(
        default_factory=lambda: dict(DEFAULT_NOTIFICATIONS),
        description="channels per alert severity; an empty list silences that severity",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown IANA timezone {value!r}")
        return value

    @field_validator("notifications")
    @classmethod
    def _every_severity(cls, value: dict[AlertSeverity, list[Channel]]) -> dict[AlertSeverity, list[Channel]]:
        merged = {**DEFAULT_NOTIFICATIONS, **value}
        return {severity: sorted(set(channels)) for severity, channels in merged.items()}
