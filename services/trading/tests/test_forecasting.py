from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nattery_trading.forecasting import (
    Persistence,
    ProvidedForecast,
    RecentCorrection,
    SameSlotLastWeeks,
    SameTimeLastDays,
)
from nattery_trading.forecasting.site import history_from_actuals, site_forecast

T = datetime(2022, 1, 1, tzinfo=UTC)


def test_same_time_last_days_is_the_mean_of_the_last_days() -> None:
    hist = np.concatenate([np.full(48, 1.0), np.full(48, 2.0), np.full(48, 3.0), np.full(48, 6.0)])
    f = SameTimeLastDays(days=3).forecast(hist, T, 30, 96)
    assert np.allclose(f, (2 + 3 + 6) / 3)
    assert np.allclose(Persistence().forecast(hist, T, 30, 10), 6.0)


def test_same_slot_last_weeks_uses_weekday() -> None:
    per_week = 7 * 48
    hist = np.tile(np.arange(per_week, dtype=float), 4)
    f = SameSlotLastWeeks(weeks=4, day_weight=0.0).forecast(hist, T, 30, 48)
    assert np.allclose(f, np.arange(48))


def test_forecasts_never_read_beyond_history() -> None:
    hist = np.random.default_rng(0).uniform(0, 1, 48 * 30)
    for fc in (
        SameTimeLastDays(),
        SameSlotLastWeeks(),
        RecentCorrection(SameTimeLastDays(), multiplicative=True),
    ):
        out = fc.forecast(hist, T, 30, 200)
        assert out.shape == (200,) and np.isfinite(out).all()


def test_recent_correction_follows_a_sunnier_day() -> None:
    day = np.maximum(0, np.sin((np.arange(48) - 12) / 24 * np.pi))
    hist = np.concatenate([day * 0.5] * 3 + [day[:24]])  # today is twice as sunny so far
    base = SameTimeLastDays(days=3)
    plain = base.forecast(hist, T, 30, 4)
    corrected = RecentCorrection(base, lookback=2, multiplicative=True).forecast(hist, T, 30, 4)
    assert (corrected > plain * 1.5).all()


def test_provided_forecast_overrides_with_fallback_beyond() -> None:
    pf = ProvidedForecast(valid_from=T, slot_minutes=30, values=np.array([9.0, 9.0]))
    out = pf.forecast(np.full(48 * 3, 1.0), T, 30, 4)
    assert np.allclose(out, [9.0, 9.0, 1.0, 1.0])


def test_history_from_actuals_averages_slots_and_fills_gaps_by_time_of_day() -> None:
    start = datetime(2024, 3, 10, tzinfo=UTC)
    rows = []
    for d in range(3):
        for h in range(24):
            if d == 1 and h == 18:
                continue  # a gap: filled from 18:00 on the other days
            t = start - timedelta(days=3 - d) + timedelta(hours=h)
            rows.append({"start_at": t, "load_kw": 2.0 if h == 18 else 0.5, "pv_kw": None})
            rows.append({"start_at": t + timedelta(minutes=30), "load_kw": 0.5, "pv_kw": None})
    rows.append({"start_at": start - timedelta(hours=1, minutes=-10), "load_kw": 1.5, "pv_kw": None})  # 23:10
    hist = history_from_actuals(rows, "load_kw", start, 30)
    assert hist is not None and len(hist) == 3 * 48
    assert hist[48 + 36] == pytest.approx(2.0)  # day 1, 18:00: the gap
    assert hist[-2] == pytest.approx((0.5 + 1.5) / 2)  # 23:00 slot: two readings averaged
    assert history_from_actuals(rows, "pv_kw", start, 30) is None


def test_site_forecast_prefers_provided_then_baseline_then_flat() -> None:
    start = datetime(2024, 3, 10, tzinfo=UTC)
    history = [
        {"start_at": start - timedelta(minutes=30 * (i + 1)), "load_kw": 1.0, "pv_kw": 0.0} for i in range(96)
    ]
    provided = [
        {"start_at": start, "end_at": start + timedelta(hours=1), "load_kw": 3.0, "pv_kw": 0.5, "model": "m1"}
    ]
    load, pv, meta = site_forecast(provided, history, start, 30, 6, SameSlotLastWeeks(), SameTimeLastDays())
    assert load.tolist() == [3.0, 3.0, 1.0, 1.0, 1.0, 1.0] and pv.tolist()[:2] == [0.5, 0.5]
    assert meta["load"]["source"] == "provided+baseline" and meta["load"]["models"] == ["m1"]
    load, pv, meta = site_forecast([], [], start, 30, 4, SameSlotLastWeeks(), SameTimeLastDays())
    assert load.tolist() == [0.4] * 4 and pv.tolist() == [0.0] * 4
    assert meta["load"]["source"] == meta["pv"]["source"] == "flat"
