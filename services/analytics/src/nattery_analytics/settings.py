"""Settings of the analytics service (``NATTERY_`` prefix; its own section is ``NATTERY_ANALYTICS__*``)."""

from __future__ import annotations

from datetime import time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

from nattery_shared.settings import ServiceSettings


class AnalyticsSection(BaseModel):
    """Options only the analytics service reads."""

    forecast_enabled: bool = True  # the scheduled day-ahead load forecasts (forecasts/service.py)
    forecast_check_interval_s: float = Field(default=300.0, gt=0)  # how often due sites are looked for
    forecast_issue_local: time = time(16, 0)  # day-ahead forecasts are issued at this local time
    # No event carries a site's timezone yet (device.registered lacks it): one zone for every site.
    forecast_timezone: str = "Europe/London"
    forecast_history_days: int = Field(default=365, ge=8, le=800)  # load history read for training
    forecast_min_history_days: float = Field(default=14.0, ge=1)  # fewer days of readings: persistence
    forecast_retrain_days: float = Field(default=7.0, gt=0)  # a site's model is re-trained this often
    forecast_active_days: int = Field(default=7, ge=1)  # sites with load readings this recent are forecast
    forecast_measurement: str = "inverter"  # device service's telemetry measurement holding the site load
    forecast_concurrency: int = Field(default=2, ge=1)  # sites trained side by side (one core each)
    # Energy flows (flows/): hourly rollups per device, recomputed where telemetry changed.
    flows_enabled: bool = True  # the periodic rollup job
    flows_interval_s: float = Field(default=300.0, gt=0)  # how often hours with new data are looked for
    flows_lookback_h: int = Field(default=72, ge=2, le=24 * 400)  # older late data: refresh(lookback=)
    flows_measurement: str = Field(default="inverter", pattern=r"^[a-z][a-z0-9_]*$")  # device telemetry
    flows_timezone: str = "Europe/London"  # days and months of the API (no event carries a site's zone yet)
    flows_power_max_gap_s: float = Field(default=300.0, gt=0, le=3600)  # power never integrated across more
    flows_counter_max_gap_s: float = Field(default=900.0, gt=0, le=3600)  # nor a counter's increase
    flows_max_power_kw: float = Field(default=100.0, gt=0)  # a counter rising faster is a glitch

    @field_validator("forecast_timezone", "flows_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA timezone {value!r}") from err
        return value


class AnalyticsSettings(ServiceSettings):
    service_name: str = "analytics"
    port: int = 3003
    analytics: AnalyticsSection = AnalyticsSection()


@lru_cache(maxsize=1)
def get_settings() -> AnalyticsSettings:
    return AnalyticsSettings()
