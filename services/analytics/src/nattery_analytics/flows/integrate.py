"""Hourly energy of one device from its raw telemetry: the inverter's own counters where it has them,
else the time integral of power. Pure numpy, no I/O (the service reads, this computes).

Every hour's figure comes with the seconds it covers. A segment between two consecutive samples counts
(energy and covered seconds) only when it is no longer than the quantity's ``max_gap_s``: a gap is
reported as uncovered seconds, never as zero energy, and never bridged by a straight line.

- Power (``*_power_w``, signs as ARCHITECTURE §3): trapezoid between samples, the positive and negative
  parts apart (a segment that crosses zero is split where the line crosses it), so ``grid_power_w``
  gives import and export, ``battery_power_w`` discharge and charge.
- Counters (``*_energy_total_kwh``, else ``*_energy_today_kwh``): the increase between samples, spread
  evenly over the segment. A daily counter falls back to about zero at the inverter's midnight: the
  increase across the fall is the new value (energy since the reset). A lifetime counter that falls from
  near its register's maximum has wrapped (add the modulus); one that falls otherwise was reset (the
  new value). An increase no inverter can make (above ``max_power_kw`` for the segment, plus one
  register step) is a glitch: that segment is left uncovered.
- Hour boundaries: a covered segment that crosses one is cut there (linear interpolation), so each
  hour gets exactly its part.

The counters' resolution (0.1 kWh on the Deye/Sunsynk map) limits one hour's counter figure to about
that; days and months telescope and keep the counter's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

HOUR_S = 3600.0
# Deye/Sunsynk lifetime counters are uint32 in 0.1 kWh: they wrap at 2^32 x 0.1 kWh.
TOTAL_WRAP_KWH = 2**32 * 0.1
COUNTER_STEP_KWH = 0.1


class Quantity(StrEnum):
    PV = "pv"
    LOAD = "load"
    GRID_IMPORT = "grid_import"
    GRID_EXPORT = "grid_export"
    BATTERY_CHARGE = "battery_charge"
    BATTERY_DISCHARGE = "battery_discharge"


class Source(StrEnum):
    COUNTER = "counter"
    POWER = "power"


# Power field and the part of it (+1 positive, -1 negative) that is each quantity.
POWER_FIELD: dict[Quantity, tuple[str, int]] = {
    Quantity.PV: ("pv_power_w", 1),
    Quantity.LOAD: ("load_power_w", 1),
    Quantity.GRID_IMPORT: ("grid_power_w", 1),
    Quantity.GRID_EXPORT: ("grid_power_w", -1),
    Quantity.BATTERY_CHARGE: ("battery_power_w", -1),
    Quantity.BATTERY_DISCHARGE: ("battery_power_w", 1),
}


def total_counter(q: Quantity) -> str:
    return f"{q.value}_energy_total_kwh"


def daily_counter(q: Quantity) -> str:
    return f"{q.value}_energy_today_kwh"


# Every field the flows read, in a fixed order.
FIELDS: tuple[str, ...] = tuple(
    sorted(
        {f for f, _ in POWER_FIELD.values()}
        | {total_counter(q) for q in Quantity}
        | {daily_counter(q) for q in Quantity}
    )
)


@dataclass(frozen=True)
class Limits:
    power_max_gap_s: float = 300.0
    counter_max_gap_s: float = 900.0
    max_power_kw: float = 100.0


@dataclass(frozen=True)
class Series:
    """One field's samples: ``t_s`` epoch seconds, strictly increasing; ``v`` the values."""

    t_s: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class HourFigure:
    """One quantity over one hour: ``kwh`` is None when no second of the hour is covered."""

    kwh: float | None
    covered_s: float
    source: Source | None


def _cut_at_hours(t: np.ndarray, y: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert interpolated points at the hour boundaries strictly inside covered segments.
    ``ok[i]`` says whether segment ``t[i]..t[i+1]`` counts; the halves of a cut segment inherit it."""
    if len(t) < 2:
        return t, y, ok
    first = np.ceil(t[0] / HOUR_S) * HOUR_S
    bounds = np.arange(first, t[-1], HOUR_S)
    bounds = bounds[bounds > t[0]]
    if len(bounds) == 0:
        return t, y, ok
    j = np.searchsorted(t, bounds)  # t[j-1] < b <= t[j]
    keep = (t[j] != bounds) & ok[j - 1]
    bounds, j = bounds[keep], j[keep]
    if len(bounds) == 0:
        return t, y, ok
    frac = (bounds - t[j - 1]) / (t[j] - t[j - 1])
    yb = y[j - 1] + (y[j] - y[j - 1]) * frac
    return np.insert(t, j, bounds), np.insert(y, j, yb), np.insert(ok, j - 1, ok[j - 1])


def _per_hour(
    t: np.ndarray, energy: np.ndarray, ok: np.ndarray, start_s: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sum each covered segment's energy and duration into the hour it lies in (cut beforehand)."""
    d = np.diff(t)
    idx = np.floor((t[:-1] - start_s) / HOUR_S).astype(np.int64)
    use = ok & (d > 0) & (idx >= 0) & (idx < n)
    kwh = np.bincount(idx[use], weights=energy[use], minlength=n)[:n]
    covered = np.bincount(idx[use], weights=d[use], minlength=n)[:n]
    return kwh, covered


def power_hours(
    s: Series, sign: int, start_s: float, n: int, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """kWh of the positive (``sign`` 1) or negative (-1, as a positive figure) part of a power field."""
    if len(s.t_s) < 2:
        return np.zeros(n), np.zeros(n)
    ok = np.diff(s.t_s) <= max_gap_s
    t, y, ok = _cut_at_hours(s.t_s, s.v * sign, ok)
    y0, y1, d = y[:-1], y[1:], np.diff(t)
    p0, p1 = np.maximum(y0, 0.0), np.maximum(y1, 0.0)
    crossing = (y0 > 0) != (y1 > 0)
    spread = np.abs(y0 - y1)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_ws = d * (p0 * p0 + p1 * p1) / (2.0 * spread)
    ws = np.where(crossing & (spread > 0), crossing_ws, (p0 + p1) / 2.0 * d)
    return _per_hour(t, ws / 3.6e6, ok, start_s, n)


def counter_increments(s: Series, *, daily: bool) -> np.ndarray:
    """The counter's increase over each segment, resets and wrap-around resolved."""
    inc = np.diff(s.v)
    fell = inc < 0
    if daily:
        inc[fell] = s.v[1:][fell]  # reset at the inverter's midnight: energy since the reset
    else:
        wrapped = fell & (s.v[:-1] > 0.9 * TOTAL_WRAP_KWH)
        inc[wrapped] += TOTAL_WRAP_KWH
        reset = fell & ~wrapped
        inc[reset] = s.v[1:][reset]
    return inc


def counter_hours(
    s: Series, *, daily: bool, start_s: float, n: int, limits: Limits
) -> tuple[np.ndarray, np.ndarray]:
    if len(s.t_s) < 2:
        return np.zeros(n), np.zeros(n)
    inc = counter_increments(s, daily=daily)
    d = np.diff(s.t_s)
    plausible = inc <= limits.max_power_kw * d / HOUR_S + COUNTER_STEP_KWH + 1e-9
    ok = (d <= limits.counter_max_gap_s) & plausible
    cumulative = np.concatenate(([0.0], np.cumsum(np.where(ok, inc, 0.0))))
    t, c, ok = _cut_at_hours(s.t_s, cumulative, ok)
    return _per_hour(t, np.diff(c), ok, start_s, n)


def device_hours(
    fields: Mapping[str, Series], start_s: float, n: int, limits: Limits
) -> dict[Quantity, list[HourFigure]]:
    """Each quantity's figure for the ``n`` hours from ``start_s`` (a whole hour, epoch seconds).

    Per quantity and hour, the counter (lifetime, else daily) when it covers at least as much of the
    hour as power does, else power."""
    out: dict[Quantity, list[HourFigure]] = {}
    for q in Quantity:
        candidates: list[tuple[Source, np.ndarray, np.ndarray]] = []
        total, daily = fields.get(total_counter(q)), fields.get(daily_counter(q))
        if total is not None and len(total.t_s) >= 2:
            candidates.append(
                (Source.COUNTER, *counter_hours(total, daily=False, start_s=start_s, n=n, limits=limits))
            )
        elif daily is not None and len(daily.t_s) >= 2:
            candidates.append(
                (Source.COUNTER, *counter_hours(daily, daily=True, start_s=start_s, n=n, limits=limits))
            )
        field, sign = POWER_FIELD[q]
        power = fields.get(field)
        if power is not None and len(power.t_s) >= 2:
            candidates.append((Source.POWER, *power_hours(power, sign, start_s, n, limits.power_max_gap_s)))
        figures: list[HourFigure] = []
        for h in range(n):
            best: tuple[Source, float, float] | None = None
            for source, kwh, covered in candidates:
                if covered[h] > 0 and (best is None or covered[h] > best[2] + 1e-6):
                    best = (source, float(kwh[h]), float(covered[h]))
            if best is None:
                figures.append(HourFigure(None, 0.0, None))
            else:
                figures.append(HourFigure(max(best[1], 0.0), min(best[2], HOUR_S), best[0]))
        out[q] = figures
    return out
