"""PV and household-load profiles from the bundled real data (``nattery_data``, see its SOURCES.md)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

import nattery_data


@lru_cache(maxsize=1)
def _pv_series() -> tuple[float, ...]:
    text = nattery_data.path(nattery_data.PVGIS_OXFORD_2016).read_text()
    out: list[float] = []
    for row in csv.reader(text.splitlines()[1:]):
        if len(row) == 2 and row[0][:1].isdigit() and ":" in row[0]:
            out.append(float(row[1]))
    return tuple(out)


@lru_cache(maxsize=1)
def _load_series() -> tuple[float, ...]:
    text = nattery_data.path(nattery_data.UK_HOUSEHOLD_DEMAND).read_text()
    out: list[float] = []
    for row in csv.reader(text.splitlines()[1:]):
        if len(row) == 2 and row[0].strip().isdigit():
            out.append(float(row[1]))
    return tuple(out)


def _hours_into(year: int, t: datetime) -> float:
    """Hours from 1 Jan 00:00 of ``year`` to the same month/day/time as ``t``."""
    month, day = t.month, t.day
    if month == 2 and day == 29 and year % 4:
        day = 28
    d = date(year, month, day)
    day_index = (d - date(year, 1, 1)).days
    return day_index * 24 + t.hour + t.minute / 60 + t.second / 3600 + t.microsecond / 3.6e9


def _interp(series: tuple[float, ...], pos: float) -> float:
    """Linear interpolation between sample centres, wrapping at the end of the year."""
    n = len(series)
    i = int(pos // 1)
    frac = pos - i
    a = series[i % n]
    b = series[(i + 1) % n]
    return a + (b - a) * frac


@dataclass(frozen=True)
class SiteProfile:
    pv_kwp: float = 4.0
    load_scale: float = 1.0

    def pv_w(self, t: datetime) -> float:
        """PV output at ``t`` (W): the hourly PVGIS 1 kWp value scaled to ``pv_kwp``."""
        pos = _hours_into(2016, t) - 0.5  # hourly means, centred on the half hour
        return max(0.0, _interp(_pv_series(), pos) * self.pv_kwp)

    def load_w(self, t: datetime) -> float:
        """Household demand at ``t`` (W), half-hourly average demand times ``load_scale``."""
        pos = _hours_into(2015, t) * 2 - 0.5
        return max(0.0, _interp(_load_series(), pos) * 1000.0 * self.load_scale)
