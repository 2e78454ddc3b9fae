"""API models of a site's strategy."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field


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
