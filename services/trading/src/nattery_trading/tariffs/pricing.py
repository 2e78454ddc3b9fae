"""Turn a site's tariffs into one price per plan slot (pure functions).

- fixed: one rate.
- time_of_use: rates by local time of day in the site's timezone (DST aware); a rate whose end is not
  after its start wraps past midnight.
- dynamic: the market feed's published prices, each covering its interval (from its start to the next
  price's start, at most the feed's usual step: the median gap between starts). A slot's price is the
  time-weighted mean of the published prices over the slot's span, so a 30-minute slot on 15-minute
  prices (ENTSO-E day-ahead since 1 Oct 2025) is the mean of its two quarters; on hourly or half-hourly
  prices it is the one price covering it. A slot not fully covered by published prices (beyond the
  published horizon, or straddling its end, or in a gap) is forecast (marked so the plan can say it):
  its uncovered part is priced at the time-weighted mean of the known prices over the same span at the
  same UTC time of day on each of the last 7 days, weighted with its published part by duration.
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
    n = len(tariff.known)
    if not n:
        raise ValueError("dynamic tariff without any published price")
    k_starts = np.fromiter(map(datetime.timestamp, tariff.known), np.float64, n)
    k_vals = np.fromiter(tariff.known.values(), np.float64, n)
    order = np.argsort(k_starts, kind="stable")
    cover = PublishedPrices.of(k_starts[order], k_vals[order], slot_minutes * 60.0)
    ts = start.timestamp() + slot_minutes * 60.0 * np.arange(slots, dtype=np.float64)
    return cover.slot_means(ts, slot_minutes * 60.0)


# a slot counts as fully published when at most this much of it (s) is not: float rounding only
_COVER_TOLERANCE_S = 1e-3
# forecast: the same span on each of the last 7 days
_FORECAST_LAGS_S = 86400.0 * np.arange(1, 8)


@dataclass(frozen=True)
class PublishedPrices:
    """Published prices as a step function of time (UTC seconds), for time-weighted means over spans.

    Price ``i`` covers ``[starts[i], starts[i] + lengths[i])``: up to the next start, at most ``step``
    (the median gap between starts), so a missing price leaves a gap rather than stretching the one
    before it. Means over any spans come from cumulative sums (vectorised: every site of a fleet re-plan
    prices its slots through here)."""

    starts: FloatArray
    values: FloatArray
    lengths: FloatArray
    cum_value_s: FloatArray  # [i]: integral of the prices before interval i (p/kWh x s)
    cum_cover_s: FloatArray  # [i]: covered seconds before interval i

    @classmethod
    def of(cls, starts: FloatArray, values: FloatArray, default_step_s: float) -> PublishedPrices:
        """From prices sorted by start; ``default_step_s`` is the length of a single price."""
        step = float(np.median(np.diff(starts))) if len(starts) > 1 else default_step_s
        nxt = np.append(starts[1:], np.inf)
        lengths = np.minimum(nxt, starts + step) - starts
        zero = np.zeros(1)
        return cls(
            starts,
            values,
            lengths,
            np.concatenate((zero, np.cumsum(values * lengths))),
            np.concatenate((zero, np.cumsum(lengths))),
        )

    def _at(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Integral of the prices and covered seconds up to each time of ``t`` (any shape)."""
        j = np.searchsorted(self.starts, t, side="right") - 1
        jj = np.maximum(j, 0)
        inside = np.where(j >= 0, np.clip(t - self.starts[jj], 0.0, self.lengths[jj]), 0.0)
        return self.cum_value_s[jj] + self.values[jj] * inside, self.cum_cover_s[jj] + inside

    def spans(self, t0: FloatArray, t1: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Integral of the published prices (p/kWh x s) and covered seconds over each ``[t0, t1)``."""
        v0, c0 = self._at(t0)
        v1, c1 = self._at(t1)
        return v1 - v0, c1 - c0

    def slot_means(self, ts: FloatArray, slot_s: float) -> tuple[FloatArray, np.ndarray]:
        """Price of each slot ``[ts, ts + slot_s)`` and the mask of those not fully published."""
        te = ts + slot_s
        value_s, cover_s = self.spans(ts, te)
        forecast = cover_s < slot_s - _COVER_TOLERANCE_S
        # a slot inside one published interval is priced at it exactly (no rounding from the sums)
        j = np.searchsorted(self.starts, ts, side="right") - 1
        within = (j >= 0) & (j == np.searchsorted(self.starts, te, side="left") - 1)
        out = np.where(within, self.values[np.maximum(j, 0)], value_s / slot_s)
        if forecast.any():
            lag_v, lag_c = self.spans(
                ts[forecast, None] - _FORECAST_LAGS_S[None, :], te[forecast, None] - _FORECAST_LAGS_S[None, :]
            )
            total_v, total_c = lag_v.sum(axis=1), lag_c.sum(axis=1)
            guess = total_v / np.maximum(total_c, _COVER_TOLERANCE_S)
            unknown = total_c < _COVER_TOLERANCE_S
            if unknown.any():  # nothing known at that time of day in the last week: the last day's mean
                end = float(self.starts[-1] + self.lengths[-1])
                day_v, day_c = self.spans(np.array([end - 86400.0]), np.array([end]))
                guess[unknown] = day_v[0] / day_c[0]
            missing = slot_s - cover_s[forecast]
            out[forecast] = (value_s[forecast] + missing * guess) / slot_s
        return out, forecast
