"""Turn a site's tariffs into one price per plan slot (pure functions).

- fixed: one rate.
- time_of_use: rates by local time of day in the site's timezone (DST aware); a rate whose end is not
  after its start wraps past midnight.
- dynamic: the market feed's published prices; slots not yet published are forecast as the mean of
  the same time of day over the last 7 days of known prices (marked so the plan can say it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from nattery_trading.optimiser.model import FloatArray


@dataclass(frozen=True)
class TouRate:
    start_local: time
    end_local: time
    p_per_kwh: float

    def covers(self, t: time) -> bool:
        if self.end_local > self.start_local:
            return self.start_local <= t < self.end_local
        return t >= self.start_local or t < self.end_local


@dataclass(frozen=True)
class Tariff:
    kind: str  # fixed | time_of_use | dynamic
    fixed_p_per_kwh: float | None = None
    rates: tuple[TouRate, ...] = ()
    # dynamic: start → price (p/kWh) of every known slot, any slot length
    known: dict[datetime, float] = field(default_factory=dict)
    standing_charge_p_per_day: float = 0.0


def slot_prices(
    tariff: Tariff, start: datetime, slot_minutes: int, slots: int, tz: str = "Europe/London"
) -> tuple[FloatArray, np.ndarray]:
    """Prices for ``slots`` slots from ``start`` and a mask of the ones that are forecast."""
    starts = [start + timedelta(minutes=slot_minutes * i) for i in range(slots)]
    forecast = np.zeros(slots, dtype=bool)
    if tariff.kind == "fixed":
        return np.full(slots, float(tariff.fixed_p_per_kwh or 0.0)), forecast
    if tariff.kind == "time_of_use":
        zone = ZoneInfo(tz)
        out = np.empty(slots)
        for i, s in enumerate(starts):
            local = s.astimezone(zone).time()
            rate = next((r for r in tariff.rates if r.covers(local)), None)
            if rate is None:
                raise ValueError(f"time-of-use tariff has no rate at {local} local")
            out[i] = rate.p_per_kwh
        return out, forecast
    if tariff.kind != "dynamic":
        raise ValueError(f"unknown tariff kind {tariff.kind}")
    known = sorted(tariff.known.items())
    if not known:
        raise ValueError("dynamic tariff without any published price")
    k_starts = np.array([k.timestamp() for k, _ in known])
    k_vals = np.array([v for _, v in known])
    step = np.median(np.diff(k_starts)) if len(k_starts) > 1 else slot_minutes * 60.0
    last_known = k_starts[-1] + step
    # Vectorised over the slots (every site of a fleet re-plan runs this): a published price where one
    # covers the slot, else the mean of the same time of day over the last 7 days of known prices.
    ts = start.timestamp() + slot_minutes * 60.0 * np.arange(slots)
    j = np.searchsorted(k_starts, ts, side="right") - 1
    jj = np.maximum(j, 0)
    published = (j >= 0) & (ts < k_starts[jj] + step) & (ts < last_known)
    forecast = ~published
    out = np.where(published, k_vals[jj], 0.0)
    if forecast.any():
        lags = ts[forecast, None] - 86400.0 * np.arange(1, 8)[None, :]
        idx = np.searchsorted(k_starts, lags, side="right") - 1
        ii = np.maximum(idx, 0)
        ok = (idx >= 0) & (lags < k_starts[ii] + step)
        count = ok.sum(axis=1)
        total = np.where(ok, k_vals[ii], 0.0).sum(axis=1)
        fallback = float(k_vals[-48:].mean())
        out[forecast] = np.where(count > 0, total / np.maximum(count, 1), fallback)
    return out, forecast
