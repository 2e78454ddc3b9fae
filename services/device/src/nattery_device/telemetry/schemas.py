"""Query models: latest values, history with downsampling, statistics."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
INTERVAL_RE = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
INTERVAL_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Aggregate(StrEnum):
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"


class Latest(BaseModel):
    device_id: uuid.UUID
    site_id: uuid.UUID
    ts: datetime | None
    seq: int | None
    values: dict[str, float]
    status: str | None
    status_at: datetime | None


class HistoryPoint(BaseModel):
    time: datetime
    values: dict[str, float | None]


class History(BaseModel):
    device_id: uuid.UUID
    measurement: str
    interval: str | None
    aggregate: Aggregate | None
    fields: list[str]
    points: list[HistoryPoint]


class FieldStats(BaseModel):
    mean: float | None
    min: float | None
    max: float | None
    count: int
    energy_kwh: float | None = None  # for power fields (``*_w``): the time integral, + and - summed


class Stats(BaseModel):
    device_id: uuid.UUID
    start: datetime
    end: datetime
    fields: dict[str, FieldStats]


def parse_fields(raw: str | None) -> list[str] | None:
    if raw is None or raw.strip() == "":
        return None
    names = [f.strip() for f in raw.split(",") if f.strip()]
    bad = [n for n in names if not FIELD_RE.match(n)]
    if bad:
        raise ValueError(f"invalid field names: {', '.join(bad)} (expected [a-z][a-z0-9_]*)")
    if len(names) > 50:
        raise ValueError("at most 50 fields per query")
    return names


def interval_seconds(interval: str) -> int:
    match = INTERVAL_RE.match(interval)
    if match is None:
        raise ValueError("interval must look like 5s, 1m, 15m, 1h or 1d")
    return int(match.group(1)) * INTERVAL_S[match.group(2)]


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)
