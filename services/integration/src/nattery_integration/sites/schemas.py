"""Request and response bodies of the sites area."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

MAX_KWP = 1000.0  # a large commercial roof; beyond that is a typo (W for kW) or a power plant


class PvArrayIn(BaseModel):
    """A site's location and PV array. Azimuth as pvlib: degrees east of north, 180 = south."""

    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    altitude_m: float = Field(default=0.0, ge=-500, le=9000)
    kwp: float = Field(gt=0, le=MAX_KWP, description="array DC rating at STC, kW")
    tilt_deg: float = Field(ge=0, le=90, description="0 = flat, 90 = vertical")
    azimuth_deg: float = Field(
        ge=0, le=360, description="degrees east of north: 90 east, 180 south, 270 west"
    )
    losses_pct: float = Field(default=14.0, ge=0, le=50, description="system losses (PVWatts default 14 %)")
    inverter_kw: float | None = Field(default=None, gt=0, le=MAX_KWP, description="AC limit; default = kwp")


class PvArrayOut(PvArrayIn):
    model_config = ConfigDict(extra="ignore")

    site_id: uuid.UUID
    updated_by: str
    updated_at: datetime
