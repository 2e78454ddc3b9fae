"""Replay a year honestly: plan with only what was known at each moment, execute, account.

At each planning moment (every ``replan_every`` slots) the planner knows:
- actual load and PV strictly before now (its forecasts come from that history only);
- import prices published by then: day-ahead prices for the next UK day appear at 16:00 Europe/London
  (DST aware), so before 16:00 it knows prices to the end of today, after it to the end of tomorrow;
- the export tariff (flat, contractual).
Beyond the published prices the horizon is extended to ``min_horizon_h`` with a price forecast from past
prices (mean of the same time of day over the last week), and energy left at the end is valued at a low
quantile of the last week's prices (what it would cost to buy it back), never from the future.

The battery executes the plan's first slot(s) as a fixed power; actual load and PV differ from the
forecast, so the grid absorbs the difference (PV is curtailed only to respect the export limit or when
export is paid negatively). Perfect foresight runs the same optimiser on the true data (one-week windows
with a two-day look-ahead), giving the upper bound for the capture ratio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from nattery_trading.backtest.inputs import BacktestInput
from nattery_trading.forecasting import Forecaster, SameSlotLastWeeks, SameTimeLastDays
from nattery_trading.optimiser import Battery, Plan, PlanInput, Site, solve
from nattery_trading.optimiser.model import FloatArray

LONDON = ZoneInfo("Europe/London")
PUBLISH_HOUR_LOCAL = 16


@dataclass
class BacktestConfig:
    battery: Battery = field(default_factory=Battery)
    site: Site = field(default_factory=Site)
    initial_soc_pct: float = 50.0
    replan_every: int = 1
    min_horizon_h: float = 36.0
    max_horizon_h: float = 56.0
    terminal_quantile: float = 0.25
    load_forecaster: Forecaster = field(default_factory=SameSlotLastWeeks)
    pv_forecaster: Forecaster = field(default_factory=SameTimeLastDays)
    price_forecaster: Forecaster = field(default_factory=lambda: SameTimeLastDays(days=7))
    pf_window_days: int = 7
    pf_lookahead_days: int = 2
    # "power": the battery runs the first slot's power, the grid absorbs forecast errors.
    # "modes": the first slot becomes an inverter mode as real schedules are sent: forced charge/discharge
    # at the planned power when the plan trades with the grid, otherwise self-consumption (the inverter
    # follows the actual net load within limits in real time) or idle.
    execution: str = "modes"


@dataclass
class RunResult:
    battery_kw: FloatArray
    soc_pct: FloatArray  # at the end of each slot
    grid_kw: FloatArray
    cost_p: float
    degradation_p: float
    import_kwh: float
    export_kwh: float
    throughput_kwh: float


def published_until(times: list[datetime], slot_minutes: int) -> np.ndarray:
    """For each slot, the index one past the last slot whose import price is published by its start."""
    n = len(times)
    t0 = times[0]
    step = timedelta(minutes=slot_minutes)
    out = np.empty(n, dtype=np.int64)
    cache: dict[tuple[Any, bool], int] = {}
    for k, t in enumerate(times):
        local = t.astimezone(LONDON)
        after = local.hour >= PUBLISH_HOUR_LOCAL
        key = (local.date(), after)
        if key not in cache:
            end_day = local.date() + timedelta(days=2 if after else 1)
            end_local = datetime(end_day.year, end_day.month, end_day.day, tzinfo=LONDON)
            cache[key] = math.ceil((end_local - t0) / step)
        out[k] = min(cache[key], n)
    return out


class Simulator:
    """The battery and the meter, with the actual load and PV."""

    def __init__(self, data: BacktestInput, battery: Battery, site: Site, initial_soc_pct: float) -> None:
        self.d = data
        self.b = battery
        self.site = site
        self.dt = data.slot_minutes / 60.0
        n = len(data)
        self.soc_kwh = initial_soc_pct / 100.0 * battery.capacity_kwh
        self.hold_absorbs = True
        self.battery_kw = np.zeros(n)
        self.soc_pct = np.zeros(n)
        self.grid_kw = np.zeros(n)
        self.cost = np.zeros(n)
        self.deg = np.zeros(n)

    def step(self, k: int, battery_kw: float, mode: str = "power") -> None:
        """Run one slot. ``mode`` is how the inverter applies ``battery_kw`` (see ``inverter_mode``)."""
        b, dt = self.b, self.dt
        net = float(self.d.load_kw[k] - self.d.pv_kw[k])  # what the inverter measures in real time
        if mode == "follow":  # self-consumption: cover the net load / absorb the surplus
            battery_kw = net
        elif mode == "cover_up_to":  # discharge up to the planned power, never into export
            battery_kw = min(battery_kw, max(net, 0.0))
        elif mode == "absorb_up_to":  # charge up to the planned power from surplus only
            battery_kw = max(battery_kw, min(net, 0.0))
        elif mode == "hold":  # no discharge; surplus PV still goes into the battery
            battery_kw = min(net, 0.0) if self.hold_absorbs else 0.0
        lo = b.soc_min_pct / 100.0 * b.capacity_kwh
        hi = b.soc_max_pct / 100.0 * b.capacity_kwh
        if battery_kw > 0:
            p = min(battery_kw, b.max_discharge_kw, max(self.soc_kwh - lo, 0.0) * b.discharge_efficiency / dt)
            self.soc_kwh -= p * dt / b.discharge_efficiency
        else:
            p = -min(-battery_kw, b.max_charge_kw, max(hi - self.soc_kwh, 0.0) / (b.charge_efficiency * dt))
            self.soc_kwh -= p * dt * b.charge_efficiency
        load, pv = self.d.load_kw[k], self.d.pv_kw[k]
        pi, pe = self.d.import_price[k], self.d.export_price[k]
        grid = load - pv - p
        if grid < 0 and pe < 0:  # paid negatively to export: curtail PV instead
            grid = min(grid + pv, 0.0)
        if grid < -self.site.export_limit_kw:
            grid = -self.site.export_limit_kw  # curtail the excess PV
        self.battery_kw[k] = p
        self.soc_pct[k] = self.soc_kwh / b.capacity_kwh * 100.0
        self.grid_kw[k] = grid
        self.cost[k] = dt * (pi * grid if grid > 0 else pe * grid)
        self.deg[k] = dt * abs(p) * b.degradation_p_per_kwh / 2.0

    def result(self) -> RunResult:
        dt = self.dt
        return RunResult(
            self.battery_kw,
            self.soc_pct,
            self.grid_kw,
            float(self.cost.sum()),
            float(self.deg.sum()),
            float(np.maximum(self.grid_kw, 0).sum() * dt),
            float(np.maximum(-self.grid_kw, 0).sum() * dt),
            float(np.abs(self.battery_kw).sum() * dt),
        )


def run_no_battery(data: BacktestInput) -> RunResult:
    dt = data.slot_minutes / 60.0
    grid = data.load_kw - data.pv_kw
    cost = dt * np.where(grid > 0, data.import_price * grid, data.export_price * grid)
    n = len(data)
    return RunResult(
        np.zeros(n),
        np.zeros(n),
        grid,
        float(cost.sum()),
        0.0,
        float(np.maximum(grid, 0).sum() * dt),
        float(np.maximum(-grid, 0).sum() * dt),
        0.0,
    )


def run_self_consumption(data: BacktestInput, cfg: BacktestConfig) -> RunResult:
    """The inverter's default program: charge from PV surplus, discharge to cover the load."""
    sim = Simulator(data, cfg.battery, cfg.site, cfg.initial_soc_pct)
    net = data.load_kw - data.pv_kw
    for k in range(len(data)):
        sim.step(k, float(net[k]))
    return sim.result()


@dataclass
class PlannerStats:
    plans: int = 0
    follow_slots: int = 0
    mip_plans: int = 0
    relaxed_plans: int = 0
    solve_ms: list[float] = field(default_factory=list)
    horizons: list[int] = field(default_factory=list)


def _terminal_value(prices: FloatArray, q: float, battery: Battery) -> float:
    """What a kWh left in the battery is worth: buying it back at a cheap recent price."""
    return float(np.quantile(prices, q)) / battery.charge_efficiency if len(prices) else 0.0


def run_optimiser(
    data: BacktestInput,
    cfg: BacktestConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[RunResult, PlannerStats]:
    n = len(data)
    per_day = 24 * 60 // data.slot_minutes
    known_end = published_until(data.times, data.slot_minutes)
    sim = Simulator(data, cfg.battery, cfg.site, cfg.initial_soc_pct)
    stats = PlannerStats()
    min_h = round(cfg.min_horizon_h * 60 / data.slot_minutes)
    max_h = round(cfg.max_horizon_h * 60 / data.slot_minutes)
    k = 0
    while k < n:
        ke = int(known_end[k])
        h_known = ke - k
        h = min(max(h_known, min_h), max_h)
        price = np.empty(h)
        nk = min(h_known, h)
        price[:nk] = data.import_price[k : k + nk]
        if h > nk:
            price[nk:] = cfg.price_forecaster.forecast(
                data.import_price[:ke], data.times[0], data.slot_minutes, h - nk
            )
        export = np.full(h, data.export_price[k])  # the export tariff is contractual (flat)
        ex_known = min(h, n - k)
        export[:ex_known] = data.export_price[k : k + ex_known]
        load_f = cfg.load_forecaster.forecast(data.load_kw[:k], data.times[k], data.slot_minutes, h)
        pv_f = cfg.pv_forecaster.forecast(data.pv_kw[:k], data.times[k], data.slot_minutes, h)
        recent = data.import_price[max(0, ke - 7 * per_day) : ke]
        tv = _terminal_value(recent, cfg.terminal_quantile, cfg.battery)
        inp = PlanInput(
            start=data.times[k],
            slot_minutes=data.slot_minutes,
            import_price_p_per_kwh=price,
            export_price_p_per_kwh=export,
            load_kw=np.maximum(load_f, 0.0),
            pv_kw=np.maximum(pv_f, 0.0),
            initial_soc_pct=sim.soc_kwh / cfg.battery.capacity_kwh * 100.0,
            battery=cfg.battery,
            site=cfg.site,
            terminal_value_p_per_kwh=tv,
        )
        plan = solve(inp, explain=False)
        stats.plans += 1
        stats.mip_plans += plan.method != "lp"
        stats.solve_ms.append(plan.solve_ms)
        stats.horizons.append(h)
        steps = min(cfg.replan_every, n - k)
        for j in range(steps):
            mode = inverter_mode(plan, j) if cfg.execution == "modes" else "power"
            stats.follow_slots += mode != "power"
            sim.step(k + j, float(plan.battery_power_kw[j]), mode)
        k += steps
        if progress is not None:
            progress(steps)
    return sim.result(), stats


def inverter_mode(plan: Plan, j: int, eps: float = 0.02) -> str:
    """Turn a planned slot into the instruction an inverter gets (as real schedules are sent).

    Trading with the grid (charging from it, discharging into it) is a forced power: the grid absorbs
    the forecast error. Moving energy only between PV, load and battery is a self-consumption mode that
    the inverter runs on its own real-time measurement, capped at the planned power where the plan
    deliberately left part of the load or surplus to the grid. Idle slots hold (no discharge)."""
    b = float(plan.battery_power_kw[j])
    imp, exp_ = float(plan.import_kw[j]), float(plan.export_kw[j])
    if abs(b) <= eps:
        return "hold"
    if b > 0:
        if exp_ > eps:
            return "power"  # discharging into export
        return "cover_up_to" if imp > eps else "follow"
    if imp > eps:
        return "power"  # charging from the grid
    return "absorb_up_to" if exp_ > eps else "follow"


def run_perfect_foresight(
    data: BacktestInput, cfg: BacktestConfig, progress: Callable[[int], None] | None = None
) -> RunResult:
    n = len(data)
    per_day = 24 * 60 // data.slot_minutes
    win = cfg.pf_window_days * per_day
    look = cfg.pf_lookahead_days * per_day
    sim = Simulator(data, cfg.battery, cfg.site, cfg.initial_soc_pct)
    k = 0
    while k < n:
        e = min(n, k + win + look)
        inp = PlanInput(
            start=data.times[k],
            slot_minutes=data.slot_minutes,
            import_price_p_per_kwh=data.import_price[k:e],
            export_price_p_per_kwh=data.export_price[k:e],
            load_kw=data.load_kw[k:e],
            pv_kw=data.pv_kw[k:e],
            initial_soc_pct=sim.soc_kwh / cfg.battery.capacity_kwh * 100.0,
            battery=cfg.battery,
            site=cfg.site,
            terminal_value_p_per_kwh=_terminal_value(
                data.import_price[max(0, e - 7 * per_day) : e], cfg.terminal_quantile, cfg.battery
            )
            if e < n
            else None,
        )
        plan = solve(inp, explain=False)
        steps = min(win, n - k)
        for j in range(steps):
            sim.step(k + j, float(plan.battery_power_kw[j]))
        k += steps
        if progress is not None:
            progress(steps)
    return sim.result()


def summarise(
    data: BacktestInput,
    cfg: BacktestConfig,
    none: RunResult,
    selfc: RunResult,
    opt: RunResult,
    pf: RunResult,
    stats: PlannerStats,
    seconds: float,
) -> dict[str, Any]:
    def block(r: RunResult) -> dict[str, float]:
        total = r.cost_p + r.degradation_p
        return {
            "energy_cost_p": round(r.cost_p, 1),
            "degradation_cost_p": round(r.degradation_p, 1),
            "total_cost_p": round(total, 1),
            "savings_vs_no_battery_p": round(none.cost_p - total, 1),
            "import_kwh": round(r.import_kwh, 1),
            "export_kwh": round(r.export_kwh, 1),
            "battery_throughput_kwh": round(r.throughput_kwh, 1),
            "final_soc_pct": round(float(r.soc_pct[-1]), 1) if r.throughput_kwh else None,  # type: ignore[dict-item]
        }

    opt_sav = none.cost_p - (opt.cost_p + opt.degradation_p)
    pf_sav = none.cost_p - (pf.cost_p + pf.degradation_p)
    sc_sav = none.cost_p - (selfc.cost_p + selfc.degradation_p)
    b = cfg.battery
    return {
        "period": {
            "start": data.times[0].isoformat(),
            "end": (data.times[-1] + timedelta(minutes=data.slot_minutes)).isoformat(),
            "slots": len(data),
            "slot_minutes": data.slot_minutes,
        },
        "battery": {
            "capacity_kwh": b.capacity_kwh,
            "max_charge_kw": b.max_charge_kw,
            "max_discharge_kw": b.max_discharge_kw,
            "charge_efficiency": b.charge_efficiency,
            "discharge_efficiency": b.discharge_efficiency,
            "soc_min_pct": b.soc_min_pct,
            "soc_max_pct": b.soc_max_pct,
            "degradation_p_per_kwh": b.degradation_p_per_kwh,
            "initial_soc_pct": cfg.initial_soc_pct,
        },
        "cost_no_battery_p": round(none.cost_p, 1),
        "no_battery": block(none),
        "self_consumption": block(selfc),
        "optimiser": block(opt),
        "perfect_foresight": block(pf),
        "cost_self_consumption_p": round(selfc.cost_p + selfc.degradation_p, 1),
        "cost_optimiser_p": round(opt.cost_p + opt.degradation_p, 1),
        "cost_perfect_foresight_p": round(pf.cost_p + pf.degradation_p, 1),
        "capture_ratio": round(opt_sav / pf_sav, 4) if pf_sav > 0 else None,
        "self_consumption_capture_ratio": round(sc_sav / pf_sav, 4) if pf_sav > 0 else None,
        "savings_definition": "cost without battery - (energy cost + degradation cost); costs include "
        "degradation at degradation_p_per_kwh per kWh cycled (half on charge, half on discharge)",
        "planner": {
            "replan_every_slots": cfg.replan_every,
            "plans": stats.plans,
            "plans_with_export_above_import_fix": stats.mip_plans,
            "execution": cfg.execution,
            "self_consumption_mode_slots": stats.follow_slots,
            "median_solve_ms": round(float(np.median(stats.solve_ms)), 3) if stats.solve_ms else None,
            "p95_solve_ms": round(float(np.quantile(stats.solve_ms, 0.95)), 3) if stats.solve_ms else None,
            "median_horizon_slots": int(np.median(stats.horizons)) if stats.horizons else None,
            "min_horizon_h": cfg.min_horizon_h,
            "max_horizon_h": cfg.max_horizon_h,
            "price_publication": "day-ahead prices for the next UK day known from 16:00 Europe/London",
            "forecasts": {
                "load": repr(cfg.load_forecaster),
                "pv": repr(cfg.pv_forecaster),
                "price_beyond_published": repr(cfg.price_forecaster),
            },
            "terminal_value": f"quantile {cfg.terminal_quantile} of the last 7 days' known import prices "
            "/ charge efficiency",
        },
        "runtime_s": round(seconds, 1),
    }


def run_all(
    data: BacktestInput, cfg: BacktestConfig, show_progress: bool = True
) -> tuple[dict[str, Any], RunResult]:
    from tqdm import tqdm

    t0 = time.perf_counter()
    none = run_no_battery(data)
    selfc = run_self_consumption(data, cfg)
    with tqdm(
        total=len(data), desc="optimiser", unit="slot", disable=not show_progress, mininterval=1.0
    ) as bar:
        opt, stats = run_optimiser(data, cfg, bar.update)
    with tqdm(
        total=len(data), desc="perfect foresight", unit="slot", disable=not show_progress, mininterval=1.0
    ) as bar:
        pf = run_perfect_foresight(data, cfg, bar.update)
    summary = summarise(data, cfg, none, selfc, opt, pf, stats, time.perf_counter() - t0)
    return summary, opt
