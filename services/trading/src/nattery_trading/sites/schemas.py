"""API models of a site's battery configuration."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from nattery_shared.validation import Text


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
