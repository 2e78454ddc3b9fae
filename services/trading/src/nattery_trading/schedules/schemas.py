"""API models of schedules, actuals and the what-if planner."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field

from nattery_shared.validation import Finite, PricePerKwh
from nattery_trading.sites.schemas import BatteryConfig
from nattery_trading.strategies.schemas import StrategyIn


class SlotOut(BaseModel):
    start_at: datetime
    end_at: datetime
    mode: str
    battery_power_kw: float
    soc_pct: float
    grid_kw: float
    import_p_per_kwh: float
    export_p_per_kwh: float
    reason: str


class ScheduleOut(BaseModel):
    schedule_id: uuid.UUID
    version: int
    site_id: uuid.UUID
    valid_until: datetime
    trigger: str
    status: str
    method: str
    objective_p: float | None
    relaxations: list[dict[str, object]]
    forecast: dict[str, object] = Field(
        default_factory=dict,
        description="which load/PV forecast sources the plan used (provided, baseline, flat)",
    )
    slots: list[SlotOut]


class ActualIn(BaseModel):
    start_at: AwareDatetime
    battery_power_kw: Finite
    soc_pct: float | None = Field(default=None, ge=0, le=100)
    grid_kw: Finite | None = None
    load_kw: float | None = Field(
        default=None, ge=0, le=1_000_000, description="site consumption (baseline forecast history)"
    )
    pv_kw: float | None = Field(
        default=None, ge=0, le=1_000_000, description="PV production (baseline forecast history)"
    )


class PlannedVsActual(BaseModel):
    start_at: datetime
    end_at: datetime
    version: int
    mode: str
    planned_battery_power_kw: float
    planned_soc_pct: float
    reason: str
    actual_battery_power_kw: float | None
    actual_soc_pct: float | None
    actual_grid_kw: float | None


class PreviewIn(BaseModel):
    """A stateless plan: arrays of one value per slot."""

    start: AwareDatetime
    slot_minutes: int = Field(default=30, gt=0, le=240)
    import_price_p_per_kwh: list[PricePerKwh] = Field(min_length=1, max_length=672)
    export_price_p_per_kwh: list[PricePerKwh] = Field(min_length=1, max_length=672)
    load_kw: list[Finite] = Field(min_length=1, max_length=672)
    pv_kw: list[Finite] = Field(min_length=1, max_length=672)
    initial_soc_pct: float = Field(ge=0, le=100)
    battery: BatteryConfig
    strategy: StrategyIn = Field(default_factory=StrategyIn)
    terminal_value_p_per_kwh: PricePerKwh | None = None
