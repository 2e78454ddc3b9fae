"""The day-ahead model on real metered data: better than persistence, honest about what it knew, and
falling back to persistence (saying so) when the history is short."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nattery_analytics.forecasts.datasets import DATA_DIR, HOUSEHOLD_TIMEZONE, HOUSEHOLDS, read_load_csv
from nattery_analytics.forecasts.evaluation import walk_forward
from nattery_analytics.forecasts.features import LoadHistory, day_slots, issue_instant
from nattery_analytics.forecasts.model import (
    MODEL_NAME,
    PERSISTENCE_NAME,
    LoadModel,
    ModelConfig,
    forecast_day,
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


def test_short_history_falls_back_to_persistence_and_says_so(sceaux: LoadHistory) -> None:
    target = date(2008, 1, 9)  # a week of history: less than the 14 days the model needs
    issue = issue_instant(target - timedelta(days=1), ZONE, CONFIG.issue_local)
    model = LoadModel(CONFIG, ZONE)
    assert not model.fit(sceaux, issue)
    forecast = forecast_day(model, sceaux, target, ZONE, CONFIG)
    assert forecast.model == PERSISTENCE_NAME
    assert "fallback" in forecast.reason and "needs 14" in forecast.reason
    assert forecast.quantiles_kw == {}
    first, n = day_slots(target, ZONE)
    idx = sceaux.index_of(first) + np.arange(n)
    known_yesterday = idx - 48 < sceaux.index_of(issue)
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
