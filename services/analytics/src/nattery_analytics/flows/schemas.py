"""Energy flow API models: per interval, six energies, each with the data that backs it."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Interval(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Energy(BaseModel):
    """One energy over one interval. A gap is a gap: ``kwh`` counts only the covered seconds (no
    extrapolation) and is null when none is covered; ``missing_s`` says what was not seen."""

    kwh: float | None = Field(description="energy over the covered seconds; null when none is covered")
    covered_s: float = Field(ge=0, description="seconds with data (device-seconds for a site or org)")
    missing_s: float = Field(
        ge=0, description="seconds of the interval without data since each device's first"
    )
    coverage: float | None = Field(
        ge=0, le=1, description="covered_s / (covered_s + missing_s); null when nothing was expected yet"
    )
    source: Literal["counter", "power", "mixed"] | None = Field(
        description="the inverter's energy counters, the integral of power, or both over the interval"
    )


class FlowPoint(BaseModel):
    start: datetime
    end: datetime
    pv: Energy
    load: Energy
    grid_import: Energy
    grid_export: Energy
    battery_charge: Energy
    battery_discharge: Energy


class DeviceFlows(BaseModel):
    device_id: uuid.UUID
    points: list[FlowPoint]


class SiteFlows(BaseModel):
    site_id: uuid.UUID
    interval: Interval
    timezone: str = Field(description="days and months are local to this IANA zone")
    start: datetime
    end: datetime
    total: list[FlowPoint] = Field(description="the site's devices summed")
    devices: list[DeviceFlows]


class SiteSummary(BaseModel):
    site_id: uuid.UUID
    total: FlowPoint = Field(description="the site over the whole range")


class OrgFlows(BaseModel):
    org_id: uuid.UUID
    interval: Interval
    timezone: str
    start: datetime
    end: datetime
    total: list[FlowPoint] = Field(description="every site of the org summed")
    sites: list[SiteSummary]
