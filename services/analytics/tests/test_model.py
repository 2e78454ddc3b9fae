"""The day-ahead model on real metered data: better than persistence, honest about what it knew, and
falling back to persistence (saying so) when the history is short."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nattery_analytics.forecasts.datasets import DATA_DIR, HOUSEHOLD_TIMEZONE, HOUSEHOLDS, read_load_csv
from nattery_analytics.forecasts.evaluation import walk_forward
from nattery_analytics.forecasts.features import (
    FEATURES,
    LoadHistory,
    day_ahead_rows,
    day_slots,
    issue_instant,
    recent_level_ratio,
)
from nattery_analytics.forecasts.model import (
    MEDIAN,
    MODEL_NAME,
    PERSISTENCE_NAME,
    SEASONAL_NAIVE_NAME,
    LoadModel,
    ModelConfig,
    forecast_day,
    persistence,
    seasonal_naive,
)

ZONE = ZoneInfo(HOUSEHOLD_TIMEZONE)
CONFIG = ModelConfig()


@pytest.fixture(scope="module")
def sceaux() -> LoadHistory:
    return read_load_csv(DATA_DIR / HOUSEHOLDS["uci_sceaux"])


def test_model_beats_persistence_on_a_held_out_month(sceaux: LoadHistory) -> None:
    # Trained once on January-April 2008 (everything before the 1 May issue), scored on May.
    skill = walk_forward(sceaux, ZONE, date(2008, 5, 2), date(2008, 5, 31), CONFIG, retrain_every_days=60)
    assert skill.retrains == 1 and skill.fallback_days == 0
    assert skill.days == 30
    assert skill.skill > 0.1, skill


def test_forecast_does_not_see_past_its_issue_time(sceaux: LoadHistory) -> None:
    target = date(2008, 3, 12)
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    model = LoadModel(CONFIG, ZONE)
    assert model.fit(sceaux, issue)
    honest = forecast_day(model, sceaux, target, ZONE, CONFIG).load_kw
    # Everything from the issue time on replaced by nonsense: the forecast must not move.
    tampered = sceaux.load_kw.copy()
    tampered[sceaux.index_of(issue) :] = 50.0
    again = forecast_day(model, LoadHistory(sceaux.start, tampered), target, ZONE, CONFIG).load_kw
    np.testing.assert_array_equal(honest, again)
    assert model.trained_until == issue


def test_under_two_days_of_history_falls_back_to_persistence_and_says_so(sceaux: LoadHistory) -> None:
    target = date(2008, 1, 9)
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    first, n = day_slots(target, ZONE)
    # Readings from two local days before the target only: 1.7 days known at the issue time.
    load = sceaux.load_kw.copy()
    load[: sceaux.index_of(first - timedelta(days=2))] = np.nan
    short = LoadHistory(sceaux.start, load)
    model = LoadModel(CONFIG, ZONE)
    assert not model.fit(short, issue)
    forecast = forecast_day(model, short, target, ZONE, CONFIG)
    assert forecast.model == PERSISTENCE_NAME
    assert "fallback: 1.7 days" in forecast.reason and "needs 14" in forecast.reason
    assert forecast.quantiles_kw == {}
    first, n = day_slots(target, ZONE)
    idx = sceaux.index_of(first) + np.arange(n)
    known_yesterday = idx - 48 < short.index_of(issue)
    # Known at 16:00: yesterday's same time; after it, the day before.
    np.testing.assert_allclose(forecast.load_kw[known_yesterday], sceaux.load_kw[idx[known_yesterday] - 48])
    np.testing.assert_allclose(forecast.load_kw[~known_yesterday], sceaux.load_kw[idx[~known_yesterday] - 96])


def test_quantiles_are_ordered_and_bracket_the_median(sceaux: LoadHistory) -> None:
    target = date(2008, 2, 20)
    model = LoadModel(CONFIG, ZONE)
    assert model.fit(sceaux, issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local))
    forecast = forecast_day(model, sceaux, target, ZONE, CONFIG)
    assert forecast.model == MODEL_NAME
    low, mid, high = (forecast.quantiles_kw[q] for q in (0.1, 0.5, 0.9))
    assert np.all(low <= mid) and np.all(mid <= high) and np.all(low >= 0)
    assert np.mean(high - low) > 0.1  # a real spread, not three copies of one model
    np.testing.assert_array_equal(forecast.load_kw, mid)


def test_clock_change_days_have_their_own_number_of_slots(sceaux: LoadHistory) -> None:
    model = LoadModel(CONFIG, ZONE)
    spring, autumn = date(2008, 3, 30), date(2008, 10, 26)  # Europe/Paris 2008
    assert model.fit(sceaux, issue_instant(spring - timedelta(days=1), ZONE, CONFIG.issue_local))
    assert len(forecast_day(model, sceaux, spring, ZONE, CONFIG).starts) == 46
    assert len(forecast_day(None, sceaux, autumn, ZONE, CONFIG).starts) == 50


def test_point_forecast_blends_the_trees_median_with_the_seasonal_naive(sceaux: LoadHistory) -> None:
    target = date(2008, 4, 16)
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    model = LoadModel(replace(CONFIG, naive_weight=0.0), ZONE)
    assert model.fit(sceaux, issue)
    trees = model.predict(sceaux, target)
    _, x = day_ahead_rows(sceaux, target, ZONE, CONFIG.issue_local)
    # The seasonal naive: the same time's 7-day median and its ±30 min 14-day median, averaged, then
    # scaled by the square root of the last day's mean load over the last week's.
    columns = [FEATURES.index("same_time_median_7d_kw"), FEATURES.index("same_time_wide_median_14d_kw")]
    np.testing.assert_allclose(seasonal_naive(x), x[:, columns].mean(axis=1))
    ratio = recent_level_ratio(sceaux, target, ZONE, CONFIG.issue_local)
    assert ratio != 1.0
    naive = seasonal_naive(x) * ratio**0.5
    assert not np.isnan(naive).any()

    model.config = replace(CONFIG, naive_weight=0.5, naive_level_exponent=0.5)
    blended = model.predict(sceaux, target)
    np.testing.assert_allclose(blended[MEDIAN], 0.5 * trees[MEDIAN] + 0.5 * naive)
    # The spread moves with the median (where no quantile was clipped at 0) and stays ordered.
    unclipped = (blended[0.1] > 0) & (trees[0.1] > 0)
    np.testing.assert_allclose(
        (blended[0.9] - blended[MEDIAN])[unclipped], (trees[0.9] - trees[MEDIAN])[unclipped]
    )
    assert np.all(blended[0.1] <= blended[MEDIAN]) and np.all(blended[MEDIAN] <= blended[0.9])
    assert (
        forecast_day(model, sceaux, target, ZONE, model.config).load_kw.tolist() == blended[MEDIAN].tolist()
    )

    model.config = replace(CONFIG, naive_weight=1.0, naive_level_exponent=0.5)
    np.testing.assert_allclose(model.predict(sceaux, target)[MEDIAN], naive)


def test_recent_level_ratio_compares_the_last_day_before_the_issue_with_the_last_week() -> None:
    target = date(2008, 3, 12)
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    start = issue - timedelta(days=10)
    load = np.full(10 * 48 + 48, 1.0)
    load[9 * 48 : 10 * 48] = 2.0  # the 24 h before the issue: twice as busy
    load[10 * 48 :] = 50.0  # after the issue: not known yet, must not count
    history = LoadHistory(start, load)
    assert recent_level_ratio(history, target, ZONE, CONFIG.issue_local) == pytest.approx(2.0 / (8.0 / 7.0))
    load[9 * 48 : 10 * 48] = np.nan  # nothing known in the last day: no adjustment
    assert recent_level_ratio(LoadHistory(start, load), target, ZONE, CONFIG.issue_local) == 1.0


def test_naive_weight_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="naive_weight"):
        ModelConfig(naive_weight=1.5)


def synthetic_history(target: date, days_before_issue: int, load_before_issue: list[float]) -> LoadHistory:
    """``days_before_issue`` days of readings up to the issue time for ``target``, then 50 kW (not known
    at the issue: must not be seen) up to the end of the target day."""
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    start = issue - timedelta(days=days_before_issue)
    first, n = day_slots(target, ZONE)
    after = (first + timedelta(minutes=30) * n - issue) // timedelta(minutes=30)
    assert len(load_before_issue) == days_before_issue * 48
    return LoadHistory(start, np.array(load_before_issue + [50.0] * after))


def test_from_two_days_of_history_the_fallback_is_the_seasonal_naive_median() -> None:
    target = date(2024, 3, 12)  # Europe/Paris, UTC+1: the issue is 15:00 UTC, the target starts 23:00 UTC
    rng = np.random.default_rng(7)
    history = synthetic_history(target, 3, [float(v) for v in rng.uniform(0.1, 3.0, 3 * 48).round(2)])
    forecast = forecast_day(None, history, target, ZONE, CONFIG)
    assert forecast.model == SEASONAL_NAIVE_NAME
    assert "fallback: 3.0 days" in forecast.reason and "seasonal-naive" in forecast.reason
    assert forecast.quantiles_kw == {}

    # By hand, slot by slot: the median of the same time on the days known at the issue time (3 each:
    # yesterday's up to 16:00 local, from there the 2nd to 4th day back), averaged with the median of
    # the same time and its ±30 min neighbours over those days.
    issue_index = history.index_of(issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local))
    assert issue_index == 3 * 48
    first, n = day_slots(target, ZONE)
    expected = []
    for j in range(n):
        i = history.index_of(first) + j
        same = [history.load_kw[i - 48 * k] for k in range(1, 8) if 0 <= i - 48 * k < issue_index]
        wide = [
            history.load_kw[i - 48 * k + s]
            for k in range(1, 15)
            for s in (-1, 0, 1)
            if 0 <= i - 48 * k + s < issue_index
        ]
        assert len(same) == 3 and 7 <= len(wide) <= 9
        expected.append((float(np.median(same)) + float(np.median(wide))) / 2)
    np.testing.assert_allclose(forecast.load_kw, expected)
    assert not np.allclose(forecast.load_kw, persistence(history, target, ZONE, CONFIG.issue_local))

    # One slot written out: days of 1, 2 and 5 kW (oldest first) give 2 kW at 05:00 local.
    blocks = synthetic_history(target, 3, [1.0] * 48 + [2.0] * 48 + [5.0] * 48)
    assert forecast_day(None, blocks, target, ZONE, CONFIG).load_kw[10] == 2.0


def test_one_day_of_history_falls_back_to_persistence() -> None:
    target = date(2024, 3, 12)
    history = synthetic_history(target, 1, [float(v) for v in np.linspace(0.2, 2.0, 48)])
    forecast = forecast_day(None, history, target, ZONE, CONFIG)
    assert forecast.model == PERSISTENCE_NAME
    assert "fallback: 1.0 days" in forecast.reason and "persistence below 2 days" in forecast.reason
    np.testing.assert_array_equal(forecast.load_kw, persistence(history, target, ZONE, CONFIG.issue_local))


def test_the_walk_forward_counts_both_fallbacks(sceaux: LoadHistory) -> None:
    # The first week of the data: persistence on the first day, the seasonal naive after, both fallbacks.
    first_day = sceaux.start.astimezone(ZONE).date() + timedelta(days=2)
    skill = walk_forward(sceaux, ZONE, first_day, first_day + timedelta(days=6), CONFIG)
    assert skill.days == 7 and skill.fallback_days == 7 and skill.retrains == 7
    kinds = {forecast_day(None, sceaux, first_day + timedelta(days=d), ZONE, CONFIG).model for d in range(7)}
    assert kinds == {PERSISTENCE_NAME, SEASONAL_NAIVE_NAME}


def test_min_naive_days_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="min_naive_days"):
        ModelConfig(min_naive_days=0.5)
