"""API models of the trading service."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from nattery_shared.validation import Finite, PricePerKwh, Text


class BatteryConfig(BaseModel):
    timezone: Text = Field(default="Europe/London", max_length=64)
    # Upper bounds: what the LP can solve with (a 1e308 capacity made the solver's numbers infinite).
    capacity_kwh: float = Field(gt=0, le=1_000_000)
    max_charge_kw: float = Field(ge=0, le=1_000_000)
    max_discharge_kw: float = Field(ge=0, le=1_000_000)
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)
    soc_min_pct: float = Field(default=10, ge=0, le=100)
    soc_max_pct: float = Field(default=100, ge=0, le=100)
    degradation_p_per_kwh: float = Field(default=2.0, ge=0, le=100_000)
    import_limit_kw: float | None = Field(default=None, gt=0, le=1_000_000)
    export_limit_kw: float | None = Field(default=None, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _soc(self) -> BatteryConfig:
        if self.soc_min_pct > self.soc_max_pct:
            raise ValueError("soc_min_pct must not exceed soc_max_pct")
        return self


class WindowIn(BaseModel):
    start: AwareDatetime
    end: AwareDatetime
    mode: Literal["charge", "discharge", "hold", "idle"]
    power_kw: float = Field(default=0.0, ge=0, le=1_000_000)


class StrategyIn(BaseModel):
    kind: Literal["arbitrage", "self_consumption"] = "arbitrage"
    reserve_soc_pct: float = Field(default=0.0, ge=0, le=100)
    demand_charge_p_per_kw: float | None = Field(default=None, ge=0, le=100_000)
    billed_peak_kw: float = Field(default=0.0, ge=0, le=1_000_000)
    windows: list[WindowIn] = Field(default_factory=list, max_length=100)
    horizon_h: float = Field(default=36.0, ge=1, le=96)


class RateIn(BaseModel):
    start_local: time = Field(description="local time of day, no UTC offset (the tariff's site time zone)")
    end_local: time = Field(description="local time of day, no UTC offset")
    p_per_kwh: PricePerKwh

    @field_validator("start_local", "end_local")
    @classmethod
    def _local(cls, value: time) -> time:
        # A local time of day carries no offset (one like +23:59 also broke the time column: a 500).
        if value.tzinfo is not None:
            raise ValueError("give a local time of day without a UTC offset, e.g. 16:00")
        return value


class TariffIn(BaseModel):
    name: Text = Field(min_length=1, max_length=200)
    direction: Literal["import", "export"]
    kind: Literal["fixed", "time_of_use", "dynamic"]
    fixed_p_per_kwh: PricePerKwh | None = None
    rates: list[RateIn] = Field(default_factory=list, max_length=48)
    market: Text | None = Field(default=None, max_length=100)
    region: Text | None = Field(default=None, max_length=100)
    standing_charge_p_per_day: Finite = 0.0
    currency: str = Field(
        default="GBP",
        pattern="^[A-Z]{3}$",
        description="ISO 4217; every p_per_kwh is its minor unit (pence, cents)",
    )

    @model_validator(mode="after")
    def _kind(self) -> TariffIn:
        if self.kind == "fixed" and self.fixed_p_per_kwh is None:
            raise ValueError("a fixed tariff needs fixed_p_per_kwh")
        if self.kind == "time_of_use" and not self.rates:
            raise ValueError("a time_of_use tariff needs rates")
        if self.kind == "dynamic" and not self.market:
            raise ValueError("a dynamic tariff needs a market")
        return self


class TariffOut(BaseModel):
    tariff_id: uuid.UUID
    name: str
    direction: str
    kind: str
    fixed_p_per_kwh: float | None
    market: str | None
    region: str
    standing_charge_p_per_day: float
    currency: str = "GBP"


class EmergencyStopIn(BaseModel):
    site_id: uuid.UUID | None = Field(default=None, description="omit to stop every site of the org")
    reason: Text = Field(min_length=1, max_length=500)


class EmergencyStopOut(BaseModel):
    stop_id: uuid.UUID
    site_id: uuid.UUID | None
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None
    released_by: str | None


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
