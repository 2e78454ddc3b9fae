"""Device API models. A meter carries its category; other kinds must not."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nattery_contracts.mqtt import DeviceStatus, Slug
from nattery_shared.validation import Text


class DeviceKind(StrEnum):
    INVERTER = "inverter"
    METER = "meter"
    FLOW_TRANSMITTER = "flow_transmitter"


# InfluxDB measurement per device kind (ARCHITECTURE §6).
MEASUREMENT: dict[DeviceKind, str] = {
    DeviceKind.INVERTER: "inverter",
    DeviceKind.METER: "meter",
    DeviceKind.FLOW_TRANSMITTER: "flow",
}


class MeterCategory(StrEnum):
    PROD = "PROD"  # production (PV)
    CONS = "CONS"  # consumption (load)
    STOR = "STOR"  # storage (battery)
    INJ = "INJ"  # injection (grid connection point)


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    kind: DeviceKind
    profile: Text | None = Field(default=None, max_length=100, examples=["deye_sunsynk_1ph"])
    serial: Text | None = Field(default=None, max_length=100)
    meter_category: MeterCategory | None = None

    @model_validator(mode="after")
    def _category(self) -> Self:
        if self.kind is DeviceKind.METER and self.meter_category is None:
            raise ValueError("a meter needs meter_category (PROD, CONS, STOR or INJ)")
        if self.kind is not DeviceKind.METER and self.meter_category is not None:
            raise ValueError("meter_category applies to meters only")
        return self


class DeviceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Text | None = Field(default=None, max_length=100)
    serial: Text | None = Field(default=None, max_length=100)
    meter_category: MeterCategory | None = None


class Device(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    site_slug: str
    slug: str
    kind: DeviceKind
    profile: str | None
    serial: str | None
    meter_category: MeterCategory | None
    status: DeviceStatus
    status_reason: str | None
    status_at: datetime | None
    firmware: str | None
    created_at: datetime
    updated_at: datetime
