"""Tariff pricing and the price CSV reader."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from nattery_trading.tariffs.loader import read_price_csv
from nattery_trading.tariffs.pricing import Tariff, TouRate, slot_prices


def test_time_of_use_follows_local_time_across_dst() -> None:
    # Economy 7 style: 00:30-07:30 local at 10p, otherwise 30p
    t = Tariff(
        "time_of_use",
        rates=(TouRate(time(0, 30), time(7, 30), 10.0), TouRate(time(7, 30), time(0, 30), 30.0)),
    )
    summer, _ = slot_prices(t, datetime(2022, 7, 1, 0, 0, tzinfo=UTC), 30, 48)  # BST: 00:30 local = 23:30 UTC
    assert summer[0] == 10.0  # 01:00 BST
    assert summer[13] == 30.0  # 06:30 UTC = 07:30 BST
    winter, _ = slot_prices(t, datetime(2022, 1, 10, 0, 0, tzinfo=UTC), 30, 48)
    assert winter[0] == 30.0 and winter[1] == 10.0 and winter[15] == 30.0


def test_dynamic_prices_forecast_beyond_published() -> None:
    start = datetime(2022, 3, 1, tzinfo=UTC)
    known = {
        start - timedelta(days=d) + timedelta(minutes=30 * i): float(i)
        for d in range(1, 8)
        for i in range(48)
    }
    known.update({start + timedelta(minutes=30 * i): 100.0 for i in range(10)})
    prices, forecast = slot_prices(Tariff("dynamic", known=known), start, 30, 48)
    assert (prices[:10] == 100.0).all() and not forecast[:10].any()
    assert forecast[10:].all() and prices[20] == pytest.approx(20.0)


def _quarters(first: datetime, n: int, price: Callable[[int], float] = float) -> dict[datetime, float]:
    """``n`` 15-minute prices from ``first``; quarter ``i`` priced ``price(i)``."""
    return {first + timedelta(minutes=15 * i): price(i) for i in range(n)}


def test_a_30_minute_slot_on_15_minute_prices_is_the_mean_of_its_quarters() -> None:
    # ENTSO-E day-ahead publishes 15-minute prices since 1 Oct 2025; trading plans 30-minute slots
    start = datetime(2026, 3, 10, tzinfo=UTC)
    known = _quarters(start, 96, lambda i: 10.0 + i * (1 if i % 2 else -1))  # the two quarters differ
    prices, forecast = slot_prices(Tariff("dynamic", known=known), start, 30, 48)
    expected = [
        (known[start + timedelta(minutes=30 * k)] + known[start + timedelta(minutes=30 * k + 15)]) / 2
        for k in range(48)
    ]
    assert prices == pytest.approx(expected) and not forecast.any()
    assert prices[1] == pytest.approx(10.5)  # quarters 2 (8p) and 3 (13p), not the first one's 8p
    # a 1-minute slot lies in one quarter: its price exactly
    minutes, forecast = slot_prices(Tariff("dynamic", known=known), start, 1, 120)
    assert list(minutes) == [known[start + timedelta(minutes=15 * (m // 15))] for m in range(120)]
    assert not forecast.any()


def test_prices_as_long_as_the_slot_or_longer_are_unchanged() -> None:
    start = datetime(2026, 3, 10, tzinfo=UTC)
    hourly = {start + timedelta(hours=h): float(h * 3 - 20) for h in range(24)}
    prices, forecast = slot_prices(Tariff("dynamic", known=hourly), start, 30, 48)
    assert list(prices) == [hourly[start + timedelta(hours=k // 2)] for k in range(48)]  # exact
    assert not forecast.any()
    half_hourly = {start + timedelta(minutes=30 * k): 7.5 + k % 5 for k in range(48)}
    minutes, forecast = slot_prices(
        Tariff("dynamic", known=half_hourly), start + timedelta(minutes=7), 1, 600
    )
    assert list(minutes) == [half_hourly[start + timedelta(minutes=30 * ((7 + m) // 30))] for m in range(600)]
    assert not forecast.any()


def test_a_slot_straddling_the_end_of_the_published_prices_is_part_forecast() -> None:
    today = datetime(2026, 3, 10, tzinfo=UTC)
    # the last 7 days: quarter q of each day priced q, so the same 30 minutes of a past day average q + 0.5
    known = {t: v for d in range(1, 8) for t, v in _quarters(today - timedelta(days=d), 96, float).items()}
    known.update(_quarters(today, 41, lambda i: 100.0))  # published up to 10:15
    prices, forecast = slot_prices(Tariff("dynamic", known=known), today, 30, 24)
    assert (prices[:20] == 100.0).all() and not forecast[:20].any()  # to 10:00: published
    # 10:00-10:30: its first quarter published (100), the second forecast from the same span of the last
    # 7 days (quarters 40 and 41: 40.5), weighted by duration; marked as forecast
    assert forecast[20] and prices[20] == pytest.approx((100.0 + 40.5) / 2)
    assert forecast[21:].all() and prices[21] == pytest.approx(42.5) and prices[23] == pytest.approx(46.5)
    # a missing quarter in the published prices leaves a gap, not the previous price stretched over it
    del known[today + timedelta(minutes=15 * 5)]
    prices, forecast = slot_prices(Tariff("dynamic", known=known), today, 30, 4)
    assert list(forecast) == [False, False, True, False]
    assert prices[2] == pytest.approx((100.0 + 4.5) / 2)


@pytest.mark.parametrize(
    ("local_midnight", "hours"),
    [
        (datetime(2025, 10, 25, 22, 0, tzinfo=UTC), 25),  # Brussels falls back: a 25-hour delivery day
        (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), 23),  # springs forward: 23 hours
    ],
)
def test_a_dst_delivery_day_of_15_minute_prices(local_midnight: datetime, hours: int) -> None:
    known = _quarters(local_midnight, 4 * hours, float)
    slots = 2 * hours
    prices, forecast = slot_prices(
        Tariff("dynamic", known=known), local_midnight, 30, slots + 2, tz="Europe/Brussels"
    )
    assert prices[:slots] == pytest.approx([2 * k + 0.5 for k in range(slots)])
    assert not forecast[:slots].any() and forecast[slots:].all()


def test_fixed_and_price_csv(tmp_path: Path) -> None:
    prices, _ = slot_prices(Tariff("fixed", fixed_p_per_kwh=15.0), datetime(2022, 1, 1, tzinfo=UTC), 30, 4)
    assert np.allclose(prices, 15.0)
    p = tmp_path / "p.csv"
    p.write_text(
        "timestamp_utc,price_p_per_kwh_inc_vat\n2022-01-01 00:00:00+00:00,10\n2022-01-01T00:30:00Z,-2\n"
    )
    rows = read_price_csv(p)
    assert rows[1] == (datetime(2022, 1, 1, 0, 30, tzinfo=UTC), datetime(2022, 1, 1, 1, 0, tzinfo=UTC), -2.0)
