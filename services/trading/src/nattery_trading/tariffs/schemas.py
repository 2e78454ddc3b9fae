"""API models of tariffs."""

from __future__ import annotations

import uuid
from datetime import time
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from nattery_shared.validation import Finite, PricePerKwh, Text


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
