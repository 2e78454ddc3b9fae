"""Settings of the analytics service (``NATTERY_`` prefix; its own section is ``NATTERY_ANALYTICS__*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel

from nattery_shared.settings import ServiceSettings


class AnalyticsSection(BaseModel):
    """Options only the analytics service reads."""


class AnalyticsSettings(ServiceSettings):
    service_name: str = "analytics"
    port: int = 3003
    analytics: AnalyticsSection = AnalyticsSection()


@lru_cache(maxsize=1)
def get_settings() -> AnalyticsSettings:
    return AnalyticsSettings()
