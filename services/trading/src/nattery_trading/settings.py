"""Settings of the trading service (``NATTERY_`` prefix; its own section is ``NATTERY_TRADING__*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, Field

from nattery_shared.settings import ServiceSettings


class TradingSection(BaseModel):
    """Options only the trading service reads."""

    slot_minutes: int = Field(default=30, gt=0, le=60)
    # A published schedule covers [now, now + validity): stale control expires (ARCHITECTURE §4).
    schedule_validity_h: float = Field(default=2.0, gt=0, le=48)
    # How often every replica checks for schedules about to expire (one replica re-plans per tick).
    replan_interval_s: float = Field(default=60.0, gt=0)
    # Re-plans are jobs on this work queue; each replica runs one competing consumer (``run_worker``)
    # with this prefetch, and ``nattery-trading fleet-worker`` processes add more.
    site_plans_queue: str = "trading.site_plans"
    # Quorum queue of device-service's device.registered (which org owns each site; sites/consumers.py).
    sites_queue: str = "trading.sites"
    run_worker: bool = True
    # A re-plan job plans up to this many sites with one query per kind of row (fleet re-plans).
    job_max_sites: int = Field(default=50, ge=1, le=1000)
    worker_prefetch: int = Field(default=2, ge=1, le=64)
    # Measured SOC this far (percentage points) from the plan's SOC for the slot triggers a re-plan.
    drift_soc_pct: float = Field(default=10.0, gt=0, le=100)
    # How much recorded load/PV history the baseline forecasts use.
    forecast_history_days: float = Field(default=28.0, gt=0, le=400)
    # A plan starts from the battery's measured SOC (site.state_measured) when it is at most this old;
    # an older or missing one is planned around and named on the schedule (forecast.initial_state).
    measured_state_max_age_s: float = Field(default=300.0, gt=0, le=86_400)
    # Quorum queue of device-service's site.state_measured (measured/consumers.py).
    site_states_queue: str = "trading.site_states"


class TradingSettings(ServiceSettings):
    service_name: str = "trading"
    port: int = 3002
    trading: TradingSection = TradingSection()


@lru_cache(maxsize=1)
def get_settings() -> TradingSettings:
    return TradingSettings()
