"""Load forecast API models."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, Field


class LoadForecastPoint(BaseModel):
    start: datetime
    end: datetime
    load_kw: float = Field(description="the point forecast (the median for the model)")
    load_p10_kw: float | None = Field(default=None, description="10th percentile; absent for the fallbacks")
    load_p90_kw: float | None = Field(default=None, description="90th percentile; absent for the fallbacks")
    pv_kw: float = Field(
        description="PV by the same time on the last days (shown here; forecast.updated carries load only)"
    )


class LoadForecast(BaseModel):
    site_id: uuid.UUID
    org_id: uuid.UUID
    target_day: date = Field(description="the local day forecast (the service's forecast timezone)")
    issued_at: datetime
    model: str = Field(
        examples=[
            "analytics.load.gbm_quantile.v2",
            "analytics.load.seasonal_naive_fallback",
            "analytics.load.persistence_fallback",
        ]
    )
    reason: str = Field(description="what the model was trained on, or why a fallback was used")
    points: list[LoadForecastPoint]
