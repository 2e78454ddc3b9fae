"""``nattery-trading backtest`` and ``nattery-trading build-backtest-input``."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer

from nattery_trading.backtest.inputs import DATA_DIR, DEFAULT_PV_KWP, build_input, read_input, write_input
from nattery_trading.optimiser import Battery


def _week_start(spec: str) -> datetime:
    """``2022-W27`` → Monday of that ISO week, 00:00 UTC."""
    year, week = spec.upper().split("-W")
    d = date.fromisocalendar(int(year), int(week), 1)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def backtest(
    input_file: Annotated[Path, typer.Option("--input", help="CSV from build-backtest-input")],
    out_dir: Annotated[Path, typer.Option("--out-dir")],
    capacity_kwh: Annotated[float, typer.Option()] = 10.0,
    power_kw: Annotated[float, typer.Option(help="charge and discharge limit")] = 5.0,
    efficiency: Annotated[
        float, typer.Option(help="one-way efficiency, applied to charge and to discharge")
    ] = 0.95,
    soc_min_pct: Annotated[float, typer.Option()] = 10.0,
    soc_max_pct: Annotated[float, typer.Option()] = 100.0,
    degradation_p_per_kwh: Annotated[float, typer.Option(help="wear cost per kWh cycled")] = 2.0,
    initial_soc_pct: Annotated[float, typer.Option()] = 50.0,
    replan_every: Annotated[int, typer.Option(help="re-plan every N slots")] = 1,
    oracle_load_pv: Annotated[
        bool, typer.Option(help="diagnostic: plan on the actual future load and PV (prices stay honest)")
    ] = False,
    chart_week: Annotated[str | None, typer.Option(help="ISO week for the PNG, e.g. 2022-W27")] = None,
    chart_start: Annotated[str | None, typer.Option(help="first day of the PNG's week, YYYY-MM-DD")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Replay a year: plan with only what was known at each moment, simulate, compare."""
    from nattery_trading.backtest.chart import write_week_chart
    from nattery_trading.backtest.engine import BacktestConfig, run_all

    data = read_input(input_file)
    battery = Battery(
        capacity_kwh=capacity_kwh,
        max_charge_kw=power_kw,
        max_discharge_kw=power_kw,
        charge_efficiency=efficiency,
        discharge_efficiency=efficiency,
        soc_min_pct=soc_min_pct,
        soc_max_pct=soc_max_pct,
        degradation_p_per_kwh=degradation_p_per_kwh,
    )
    cfg = BacktestConfig(
        battery=battery,
        initial_soc_pct=initial_soc_pct,
        replan_every=replan_every,
        oracle_load_pv=oracle_load_pv,
    )
    summary, run = run_all(data, cfg, show_progress=progress)
    summary["input"] = str(input_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "schedule.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp_utc", "battery_power_kw", "soc_pct", "grid_kw"])
        for i, t in enumerate(data.times):
            w.writerow(
                [
                    t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    f"{run.battery_kw[i]:.4f}",
                    f"{run.soc_pct[i]:.3f}",
                    f"{run.grid_kw[i]:.4f}",
                ]
            )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if chart_week or chart_start:
        start = (
            _week_start(chart_week)
            if chart_week
            else datetime.fromisoformat(str(chart_start)).replace(tzinfo=UTC)
        )
        write_week_chart(data, run, start, out_dir / "week.png")
    typer.echo(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "cost_no_battery_p",
                    "cost_self_consumption_p",
                    "cost_optimiser_p",
                    "cost_perfect_foresight_p",
                    "capture_ratio",
                    "runtime_s",
                )
            }
        )
    )


def build_backtest_input(
    year: Annotated[int, typer.Option()],
    export_flat_p: Annotated[float, typer.Option(help="flat export tariff, p/kWh")],
    out: Annotated[Path, typer.Option()],
    slot_minutes: Annotated[int, typer.Option(help="15 or 30")] = 30,
    pv_kwp: Annotated[float, typer.Option(help="PV size; PVGIS data are per 1 kWp")] = DEFAULT_PV_KWP,
    data_dir: Annotated[Path, typer.Option(help="copies of the shared data")] = DATA_DIR,
) -> None:
    """Build the back-test CSV from Agile prices, average household demand and PVGIS PV."""
    data = build_input(year, export_flat_p, slot_minutes=slot_minutes, pv_kwp=pv_kwp, data_dir=data_dir)
    write_input(data, out)
    typer.echo(
        f"{out}: {len(data)} slots of {slot_minutes} min, PV {pv_kwp:g} kWp "
        f"({data.pv_kw.sum() * slot_minutes / 60:.0f} kWh), load {data.load_kw.sum() * slot_minutes / 60:.0f} kWh"
    )


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
    app.command("build-backtest-input")(build_backtest_input)
