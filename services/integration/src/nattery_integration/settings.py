"""Settings of the integration service (``NATTERY_`` prefix; its own section is ``NATTERY_INTEGRATION__*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel

from nattery_shared.settings import ServiceSettings


class IntegrationSection(BaseModel):
    """Options only the integration service reads."""


class IntegrationSettings(ServiceSettings):
    service_name: str = "integration"
    port: int = 3005
    integration: IntegrationSection = IntegrationSection()


@lru_cache(maxsize=1)
def get_settings() -> IntegrationSettings:
    return IntegrationSettings()
