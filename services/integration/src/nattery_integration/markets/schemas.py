"""Response bodies of the markets area."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class PriceOut(BaseModel):
    start: datetime
    end: datetime
    price_minor_per_kwh: float
    price: float


class PriceSetOut(BaseModel):
    market: str
    region: str
    direction: str
    window_start: datetime
    window_end: datetime
    version: int
    provider: str
    currency: str
    unit: str
    fetched_at: datetime
    prices: list[PriceOut]
