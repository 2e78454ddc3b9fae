"""The back-test: honest replay (no peeking), published-price timing, input building."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from typer.testing import CliRunner

from nattery_trading.__main__ import cli
from nattery_trading.backtest.engine import BacktestConfig, published_until, run_optimiser
from nattery_trading.backtest.inputs import BacktestInput, build_input, read_input, write_input

LONDON = ZoneInfo("Europe/London")


def synthetic(days: int, seed: int = 1, start: datetime = datetime(2022, 3, 1, tzinfo=UTC)) -> BacktestInput:
    n = days * 48
    rng = np.random.default_rng(seed)
    times = [start + timedelta(minutes=30 * i) for i in range(n)]
    hod = np.array([(t.hour + t.minute / 60) for t in times])
    price = 20 + 12 * np.sin((hod - 11) / 24 * 2 * np.pi) + rng.normal(0, 3, n)
    load = 0.4 + 0.3 * (hod > 17) + rng.uniform(0, 0.2, n)
    pv = np.maximum(0, 3 * np.sin((hod - 6) / 12 * np.pi)) * rng.uniform(0.3, 1, n)
    export = 0.5 * price + rng.normal(0, 2, n)  # varies: its publication rule is tested too
    return BacktestInput(times, 30, price, export, load, pv)


def test_published_prices_appear_at_16_london_dst_aware() -> None:
    # summer (BST): 16:00 London = 15:00 UTC
    times = [datetime(2022, 7, 1, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(48 * 3)]
    end = published_until(times, 30)
    i_before = times.index(datetime(2022, 7, 1, 14, 30, tzinfo=UTC))
    i_after = times.index(datetime(2022, 7, 1, 15, 0, tzinfo=UTC))
    # before: known to the end of 1 July London (= 23:00 UTC); after: to the end of 2 July London
    assert times[end[i_before] - 1] == datetime(2022, 7, 1, 22, 30, tzinfo=UTC)
    assert times[end[i_after] - 1] == datetime(2022, 7, 2, 22, 30, tzinfo=UTC)
    # winter (GMT): 16:00 London = 16:00 UTC
    times = [datetime(2022, 1, 10, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(48 * 3)]
    end = published_until(times, 30)
    assert end[times.index(datetime(2022, 1, 10, 15, 30, tzinfo=UTC))] == 48
    assert end[times.index(datetime(2022, 1, 10, 16, 0, tzinfo=UTC))] == 96


def test_backtest_cannot_see_the_future(tmp_path: Path) -> None:
    days, change_day = 5, 3
    a = synthetic(days)
    b = synthetic(days)
    cut = change_day * 48  # data differ from 4 March 00:00 UTC (= London time before BST)
    rng = np.random.default_rng(99)
    b.import_price[cut:] = rng.uniform(-10, 80, len(b) - cut)
    b.export_price[cut:] = rng.uniform(-5, 60, len(b) - cut)
    b.load_kw[cut:] *= 3.0
    b.pv_kw[cut:] *= 0.1
    # through files, as the CLI reads them
    write_input(a, tmp_path / "a.csv")
    write_input(b, tmp_path / "b.csv")
    a, b = read_input(tmp_path / "a.csv"), read_input(tmp_path / "b.csv")
    assert np.array_equal(a.import_price[:cut], b.import_price[:cut])
    assert np.array_equal(a.export_price[:cut], b.export_price[:cut])
    cfg = BacktestConfig(replan_every=1)
    ra, _ = run_optimiser(a, cfg)
    rb, _ = run_optimiser(b, cfg)
    # day 3's prices are published at 16:00 London on day 2: until then nothing can differ
    published = cut - 8 * 2
    assert a.times[published] == datetime(2022, 3, 3, 16, 0, tzinfo=UTC)  # the day before 4 March
    assert np.array_equal(ra.battery_kw[:published], rb.battery_kw[:published])
    assert np.array_equal(ra.soc_pct[:published], rb.soc_pct[:published])
    # and the futures really were different, so the plans diverge afterwards
    assert not np.array_equal(ra.battery_kw[published:], rb.battery_kw[published:])

    # export prices alone obey the same publication rule
    e = synthetic(days)
    e.export_price[cut:] = rng.uniform(-5, 60, len(e) - cut)
    write_input(e, tmp_path / "e.csv")
    re_, _ = run_optimiser(read_input(tmp_path / "e.csv"), cfg)
    assert np.array_equal(ra.battery_kw[:published], re_.battery_kw[:published])
    assert not np.array_equal(ra.battery_kw[published:], re_.battery_kw[published:])

    # load/PV changes alone are invisible until they happen
    c = synthetic(days)
    c.load_kw[cut:] *= 3.0
    c.pv_kw[cut:] *= 0.1
    write_input(c, tmp_path / "c.csv")
    rc, _ = run_optimiser(read_input(tmp_path / "c.csv"), cfg)
    assert np.array_equal(ra.battery_kw[:cut], rc.battery_kw[:cut])


def test_build_input_aligns_leap_years_and_scales_pv(tmp_path: Path) -> None:
    d = build_input(2020, 15.0, pv_kwp=2.0)
    assert len(d) == 366 * 48 and d.slot_minutes == 30
    feb28 = (datetime(2020, 2, 28, tzinfo=UTC) - d.times[0]).days * 48
    assert np.array_equal(
        d.load_kw[feb28 : feb28 + 48], d.load_kw[feb28 + 48 : feb28 + 96]
    )  # 29 Feb = 28 Feb
    assert d.pv_kw.max() == pytest.approx(2 * 0.9021, rel=0.05)
    night = [i for i, t in enumerate(d.times) if t.hour in (0, 1, 2)]
    assert np.allclose(d.pv_kw[night], 0.0)
    p = tmp_path / "in.csv"
    write_input(d, p)
    back = read_input(p)
    assert back.times == d.times
    assert np.allclose(back.import_price, d.import_price, atol=1e-4)


def test_cli_backtest_writes_schedule_summary_and_chart(tmp_path: Path) -> None:
    data = synthetic(9, start=datetime(2022, 6, 6, tzinfo=UTC))
    src = tmp_path / "in.csv"
    write_input(data, src)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            "backtest",
            "--input",
            str(src),
            "--out-dir",
            str(out),
            "--replan-every",
            "4",
            "--chart-start",
            "2022-06-07",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "cost_no_battery_p",
        "cost_self_consumption_p",
        "cost_optimiser_p",
        "cost_perfect_foresight_p",
        "capture_ratio",
    ):
        assert key in summary
    assert summary["cost_perfect_foresight_p"] <= summary["cost_optimiser_p"] + 1e-6
    lines = (out / "schedule.csv").read_text().splitlines()
    assert lines[0] == "timestamp_utc,battery_power_kw,soc_pct,grid_kw" and len(lines) == len(data) + 1
    assert (out / "week.png").stat().st_size > 10_000
