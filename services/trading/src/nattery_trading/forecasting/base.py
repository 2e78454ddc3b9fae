"""Forecasts of load and PV (kW per slot) for the optimiser.

A forecaster sees only the past: ``history`` holds the actual values of the slots immediately before
``start`` (oldest first, uniform ``slot_minutes``). Baselines work on arrays so a year-long back-test can
call them every slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np

from nattery_trading.optimiser.model import FloatArray


@runtime_checkable
class Forecaster(Protocol):
    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        """Values for ``horizon`` slots from ``start``."""
        ...


def _lagged_mean(history: FloatArray, horizon: int, period: int, count: int) -> FloatArray | None:
    """Mean of the ``count`` most recent past values at the same phase of ``period`` for each slot.

    Slot j of the horizon (absolute index n + j, n = len(history)) uses the lags
    ``n + j - (w + j // period) * period`` for w = 1..count, all of which are in the past.
    Returns None when there is not one full period of history.
    """
    n = len(history)
    if n < period:
        return None
    j = np.arange(horizon)
    base = n + j - (j // period) * period
    # all lags at once (count x horizon), summed in the order w = 1, 2, ... as a loop over w would
    idx = base[None, :] - np.arange(1, count + 1)[:, None] * period
    ok = idx >= 0
    values = np.where(ok, history[np.where(ok, idx, 0)], 0.0)
    total = np.zeros(horizon)
    for row in values:  # row by row: the sum's order, hence its rounding, of a loop over the lags
        total += row
    k = ok.sum(axis=0)
    return np.asarray(total / np.maximum(k, 1), dtype=np.float64)


@dataclass(frozen=True)
class SameSlotLastWeeks:
    """Load baseline: mean of the same time of day and weekday over the last ``weeks`` weeks, blended with
    the same time of day over the last ``days`` days (``day_weight``) to follow seasonal drift."""

    weeks: int = 4
    days: int = 7
    day_weight: float = 0.5

    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        per_day = 24 * 60 // slot_minutes
        weekly = _lagged_mean(history, horizon, 7 * per_day, self.weeks)
        daily = _lagged_mean(history, horizon, per_day, self.days)
        if daily is None:
            return np.full(horizon, float(np.mean(history)) if len(history) else 0.0)
        if weekly is None:
            return daily
        return (1 - self.day_weight) * weekly + self.day_weight * daily


@dataclass(frozen=True)
class SameTimeLastDays:
    """PV (and price) baseline: mean of the same time of day over the last ``days`` days."""

    days: int = 3

    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        per_day = 24 * 60 // slot_minutes
        out = _lagged_mean(history, horizon, per_day, self.days)
        if out is None:
            return np.full(horizon, float(np.mean(history)) if len(history) else 0.0)
        return out


@dataclass(frozen=True)
class Persistence:
    """Yesterday's value at the same time of day (the reference's 65 % baseline)."""

    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        return SameTimeLastDays(days=1).forecast(history, start, slot_minutes, horizon)


@dataclass
class ProvidedForecast:
    """A forecast someone else made (e.g. analytics' ``forecast.updated``), with a fallback beyond it.

    ``values`` start at ``valid_from`` in slots of ``slot_minutes``; slots it does not cover come from
    ``fallback``."""

    valid_from: datetime
    slot_minutes: int
    values: FloatArray
    fallback: Forecaster = field(default_factory=SameTimeLastDays)

    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        out = self.fallback.forecast(history, start, slot_minutes, horizon)
        if slot_minutes != self.slot_minutes:
            return out
        offset = int((start - self.valid_from) / timedelta(minutes=slot_minutes))
        for j in range(horizon):
            k = offset + j
            if 0 <= k < len(self.values):
                out[j] = self.values[k]
        return out


@dataclass(frozen=True)
class RecentCorrection:
    """Correct a baseline with how wrong it was over the last ``lookback`` slots (known actuals).

    The baseline is re-run as if it had been asked ``lookback`` slots ago ("hindcast"); the error over
    those slots decays into the forecast with ``decay`` per slot. ``multiplicative`` (PV: a clear-sky
    index that persists with the weather) scales by the ratio of actual to hindcast energy; otherwise
    (load) the mean error is added. Uses only the past.
    """

    base: Forecaster
    lookback: int = 4
    decay: float = 0.9
    multiplicative: bool = False
    min_energy: float = 0.2  # kW summed over the lookback below which PV is "night" (no correction)

    def forecast(self, history: FloatArray, start: datetime, slot_minutes: int, horizon: int) -> FloatArray:
        m = self.lookback
        if len(history) < m + 24 * 60 // slot_minutes:
            return self.base.forecast(history, start, slot_minutes, horizon)
        full = self.base.forecast(
            history[:-m], start - timedelta(minutes=slot_minutes * m), slot_minutes, horizon + m
        )
        hind, out = full[:m], full[m:]
        actual = history[-m:]
        weights = self.decay ** np.arange(1, horizon + 1)
        if self.multiplicative:
            if hind.sum() < self.min_energy or actual.sum() < 0:
                return out
            ratio = float(np.clip(actual.sum() / hind.sum(), 0.1, 4.0))
            return np.asarray(out * (1.0 + (ratio - 1.0) * weights))
        err = float(np.mean(actual - hind))
        return np.asarray(np.maximum(out + err * weights, 0.0))
