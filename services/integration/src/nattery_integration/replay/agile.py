"""The bundled Agile import prices (region J, 2020-2022) mapped onto any date, and an Outgoing curve.

The CSV is the project's one bundled copy (``nattery_data``; sources in its SOURCES.md), which trading's
back-test reads too. A day D is served with the prices of the same
month, day and UTC time of day in ``SOURCE_YEAR`` (29 Feb → 28 Feb). Every region gets the same curve
(the replay has one region's data). The Outgoing (export) curve is derived, not recorded: a rough
inverse of the Agile formula (providers.md §1): wholesale ≈ import / 1.05 / 2.2, export ≈ 0.95 *
wholesale + 1 p, never below 0.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import nattery_data

SOURCE_YEAR = 2021
CSV_NAME = nattery_data.AGILE_IMPORT_REGION_J
CSV_ENV = "NATTERY_REPLAY_AGILE_CSV"


def csv_path() -> Path:
    """``$NATTERY_REPLAY_AGILE_CSV`` or the bundled copy (``nattery_data``, installed with this service)."""
    if os.environ.get(CSV_ENV):
        return Path(os.environ[CSV_ENV])
    return nattery_data.path(CSV_NAME)


@lru_cache(maxsize=2)
def recorded(path: Path | None = None) -> dict[datetime, float]:
    """Start (UTC) → p/kWh inc. VAT."""
    out: dict[datetime, float] = {}
    with (path or csv_path()).open(newline="") as f:
        for row in csv.DictReader(f):
            start = datetime.fromisoformat(row["timestamp_utc"].replace("Z", "+00:00")).astimezone(UTC)
            out[start] = float(row["price_p_per_kwh_inc_vat"])
    return out


def source_date(day: date) -> date:
    try:
        return day.replace(year=SOURCE_YEAR)
    except ValueError:  # 29 February
        return date(SOURCE_YEAR, 2, 28)


def import_price(start: datetime) -> float:
    """The replayed Agile import price (p/kWh inc. VAT) of the half-hour starting at ``start``."""
    start = start.astimezone(UTC)
    src_day = source_date(start.date())
    src = datetime.combine(src_day, start.time(), UTC)
    prices = recorded()
    if src in prices:
        return prices[src]
    # a half-hour missing from the recording: the one before it
    return prices.get(src - timedelta(minutes=30), 15.0)


def export_price(start: datetime) -> float:
    wholesale = import_price(start) / 1.05 / 2.2
    return round(max(0.0, 0.95 * wholesale + 1.0), 4)


def describe(day: date) -> str:
    return f"bundled Agile region J prices of {source_date(day).isoformat()} replayed as {day.isoformat()}"
