"""Build and read the back-test input CSV.

``timestamp_utc, import_price_p_per_kwh, export_price_p_per_kwh, load_kw, pv_kw`` at a uniform slot
length, from copies of the shared data (one copy in ``nattery_data``, see its ``SOURCES.md``):

- import: Octopus Agile region J (half-hourly; for 15-min slots each price covers both quarters).
- export: a flat tariff (``export_flat_p``).
- load: the average UK household, 17,520 half-hours with no timestamps, row 0 = 1 Jan 00:00. Rows are
  aligned to the target year by day of year and time of day (treated as UTC, as the file has no clock
  changes); in a leap year 29 Feb repeats 28 Feb and later days shift by one.
- PV: PVGIS Oxford 2016 hourly, one sample per hour stamped ``HH:56`` UTC, ``EPV`` in W for a 1 kWp
  system (annual yield 1,018 kWh/kWp, peak 0.90 kW). The samples are placed at their timestamps and
  interpolated linearly to each slot's centre, taken from the same month and day of 2016 (which has a
  29 Feb, so every date exists), and scaled by ``pv_kwp`` (default 4 kWp).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np

import nattery_data
from nattery_trading.optimiser.model import FloatArray

DATA_DIR = nattery_data.DATA_DIR
AGILE_FILE = nattery_data.AGILE_IMPORT_REGION_J
DEMAND_FILE = nattery_data.UK_HOUSEHOLD_DEMAND
PV_FILE = nattery_data.PVGIS_OXFORD_2016
DEFAULT_PV_KWP = 4.0
COLUMNS = ("timestamp_utc", "import_price_p_per_kwh", "export_price_p_per_kwh", "load_kw", "pv_kw")


@dataclass
class BacktestInput:
    times: list[datetime]
    slot_minutes: int
    import_price: FloatArray
    export_price: FloatArray
    load_kw: FloatArray
    pv_kw: FloatArray

    def __len__(self) -> int:
        return len(self.times)


def _agile(path: Path) -> dict[datetime, float]:
    out: dict[datetime, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            out[datetime.fromisoformat(row["timestamp_utc"]).astimezone(UTC)] = float(
                row["price_p_per_kwh_inc_vat"]
            )
    return out


def _demand(path: Path) -> FloatArray:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return np.array([float(r[1]) for r in rows if len(r) > 1 and r[1]], dtype=np.float64)


def _pvgis(path: Path) -> tuple[FloatArray, FloatArray]:
    """Hours since 2016-01-01 00:00 UTC of each sample, and the power in kW per kWp."""
    hours: list[float] = []
    kw: list[float] = []
    origin = datetime(2016, 1, 1, tzinfo=UTC)
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0][:1].isdigit():
                continue
            ts = datetime.strptime(row[0], "%Y%m%d:%H%M").replace(tzinfo=UTC)
            hours.append((ts - origin).total_seconds() / 3600.0)
            kw.append(float(row[1]) / 1000.0)
    return np.array(hours), np.array(kw)


def build_input(
    year: int,
    export_flat_p: float,
    *,
    slot_minutes: int = 30,
    pv_kwp: float = DEFAULT_PV_KWP,
    data_dir: Path = DATA_DIR,
) -> BacktestInput:
    if slot_minutes not in (15, 30):
        raise ValueError("slot_minutes must be 15 or 30")
    agile = _agile(data_dir / AGILE_FILE)
    demand = _demand(data_dir / DEMAND_FILE)
    pv_h, pv_kw_per_kwp = _pvgis(data_dir / PV_FILE)
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    n = int((end - start) / timedelta(minutes=slot_minutes))
    times = [start + timedelta(minutes=slot_minutes * i) for i in range(n)]
    imp = np.empty(n)
    load = np.empty(n)
    pv = np.empty(n)
    missing = 0
    last = float("nan")
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    for i, t in enumerate(times):
        half = t.replace(minute=0 if t.minute < 30 else 30, second=0, microsecond=0)
        p = agile.get(half)
        if p is None:
            missing += 1
            p = last
        imp[i] = p
        last = p
        doy = (t.date() - date(year, 1, 1)).days
        if leap and doy >= 59:  # 29 Feb repeats 28 Feb; later days shift back one
            doy = 58 if doy == 59 else doy - 1
        row = doy * 48 + (t.hour * 60 + t.minute) // 30
        load[i] = demand[min(row, len(demand) - 1)]
        d16 = date(2016, t.month, t.day)
        centre_h = (d16 - date(2016, 1, 1)).days * 24 + t.hour + (t.minute + slot_minutes / 2) / 60.0
        pv[i] = float(np.interp(centre_h, pv_h, pv_kw_per_kwp)) * pv_kwp
    if missing == n:
        raise ValueError(f"no Agile prices for {year} in {data_dir / AGILE_FILE}")
    gaps = np.isnan(imp)  # only leading slots can still be empty after forward filling
    imp[gaps] = imp[~gaps][0]
    return BacktestInput(times, slot_minutes, imp, np.full(n, float(export_flat_p)), load, pv)


def write_input(inp: BacktestInput, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, t in enumerate(inp.times):
            w.writerow(
                [
                    t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    f"{inp.import_price[i]:.4f}",
                    f"{inp.export_price[i]:.4f}",
                    f"{inp.load_kw[i]:.4f}",
                    f"{inp.pv_kw[i]:.4f}",
                ]
            )


def read_input(path: Path) -> BacktestInput:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = list(reader)
    if len(rows) < 2:
        raise ValueError(f"{path}: needs at least two rows")
    times = [datetime.fromisoformat(r["timestamp_utc"].replace("Z", "+00:00")).astimezone(UTC) for r in rows]
    step = times[1] - times[0]
    for a, b in pairwise(times):
        if b - a != step:
            raise ValueError(f"{path}: slots must be uniform; {a} → {b} differs from {step}")
    minutes = int(step.total_seconds() // 60)

    def col(name: str) -> FloatArray:
        return np.array([float(r[name]) for r in rows], dtype=np.float64)

    return BacktestInput(
        times,
        minutes,
        col("import_price_p_per_kwh"),
        col("export_price_p_per_kwh"),
        col("load_kw"),
        col("pv_kw"),
    )
