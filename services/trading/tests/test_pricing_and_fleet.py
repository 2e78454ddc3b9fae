"""Tariff pricing and the price CSV reader."""

from __future__ import annotations

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


def test_fixed_and_price_csv(tmp_path: Path) -> None:
    prices, _ = slot_prices(Tariff("fixed", fixed_p_per_kwh=15.0), datetime(2022, 1, 1, tzinfo=UTC), 30, 4)
    assert np.allclose(prices, 15.0)
    p = tmp_path / "p.csv"
    p.write_text(
        "timestamp_utc,price_p_per_kwh_inc_vat\n2022-01-01 00:00:00+00:00,10\n2022-01-01T00:30:00Z,-2\n"
    )
    rows = read_price_csv(p)
    assert rows[1] == (datetime(2022, 1, 1, 0, 30, tzinfo=UTC), datetime(2022, 1, 1, 1, 0, tzinfo=UTC), -2.0)
