"""Walk-forward skill of the day-ahead load forecast against "same time yesterday".

For every target day in the window: issue at ``issue_local`` the day before, re-train first when the
model is older than ``retrain_every_days`` (training sees only slots that ended before that issue
time), forecast the day with ``model.forecast_day``, score it. The same code runs live (``service.py``),
in the benchmark (``bench/analytics.py``) and in the tests.

skill = 1 - MAE(forecast) / MAE(reference), reference = the load 24 h earlier, scored on the slots where
the actual, the reference and the forecast all exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from nattery_analytics.forecasts.features import SLOTS_PER_DAY, FloatArray, LoadHistory, issue_instant
from nattery_analytics.forecasts.model import FALLBACK_NAMES, DayRows, LoadModel, ModelConfig, forecast_day


@dataclass(frozen=True)
class Skill:
    days: int
    slots: int
    mae_kw: float
    reference_mae_kw: float
    fallback_days: int  # days forecast by a fallback (seasonal naive or persistence: history too short)
    retrains: int

    @property
    def skill(self) -> float:
        return 1.0 - self.mae_kw / self.reference_mae_kw


def walk_forward(
    history: LoadHistory,
    zone: ZoneInfo,
    first_day: date,
    last_day: date,
    config: ModelConfig,
    *,
    retrain_every_days: int = 7,
    holidays: frozenset[date] = frozenset(),
) -> Skill:
    model = LoadModel(config, zone, holidays)
    rows = DayRows(history, zone, config.issue_local, holidays)
    errors: list[FloatArray] = []
    reference_errors: list[FloatArray] = []
    fallback_days = retrains = days = 0
    day = first_day
    while day <= last_day:
        issue = issue_instant(day - timedelta(days=1), zone, config.issue_local)
        stale = model.trained_until is None or issue - model.trained_until >= timedelta(
            days=retrain_every_days
        )
        if stale or not model.trained:
            model.fit(history, issue, rows)
            retrains += 1
        forecast = forecast_day(model, history, day, zone, config, issued_at=issue)
        idx = history.index_of(forecast.starts[0]) + np.arange(len(forecast.starts))
        inside = (idx >= SLOTS_PER_DAY) & (idx < len(history.load_kw))
        actual = history.load_kw[idx[inside]]
        reference = history.load_kw[idx[inside] - SLOTS_PER_DAY]
        predicted = forecast.load_kw[inside]
        ok = ~(np.isnan(actual) | np.isnan(reference) | np.isnan(predicted))
        if ok.any():
            days += 1
            fallback_days += forecast.model in FALLBACK_NAMES
            errors.append(np.abs(predicted[ok] - actual[ok]))
            reference_errors.append(np.abs(reference[ok] - actual[ok]))
        day += timedelta(days=1)
    if not errors:
        raise ValueError("no scorable slot in the window")
    err, ref = np.concatenate(errors), np.concatenate(reference_errors)
    return Skill(
        days=days,
        slots=len(err),
        mae_kw=float(err.mean()),
        reference_mae_kw=float(ref.mean()),
        fallback_days=fallback_days,
        retrains=retrains,
    )
