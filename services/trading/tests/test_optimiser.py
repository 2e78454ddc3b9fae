"""The optimiser's behaviour on small, hand-checkable cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nattery_trading.optimiser import (
    Battery,
    DemandCharge,
    Dispatch,
    PlanInput,
    RelaxationKind,
    Site,
    Strategy,
    TimeWindow,
    WindowMode,
    solve,
)
from nattery_trading.schedules.inputs import BatchInputs

T0 = datetime(2022, 6, 1, tzinfo=UTC)


def plan_input(
    pi: list[float] | np.ndarray,
    pe: list[float] | np.ndarray | float = 5.0,
    load: float | list[float] = 0.5,
    pv: float | list[float] = 0.0,
    **kw: object,
) -> PlanInput:
    n = len(pi)

    def arr(v: object) -> np.ndarray:
        return np.full(n, float(v)) if np.isscalar(v) else np.asarray(v, dtype=float)  # type: ignore[arg-type]

    return PlanInput(
        start=T0,
        slot_minutes=30,
        import_price_p_per_kwh=arr(pi),
        export_price_p_per_kwh=arr(pe),
        load_kw=arr(load),
        pv_kw=arr(pv),
        initial_soc_pct=float(kw.pop("soc", 50.0)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_negative_prices_make_it_charge() -> None:
    pi = [20.0] * 8 + [-5.0] * 4 + [20.0] * 12
    plan = solve(plan_input(pi, soc=20))
    assert plan.status == "Optimal"
    assert (plan.charge_kw[8:12] > 1.0).all()
    assert plan.soc_pct[11] == pytest.approx(100.0)
    assert all("negative" in r for r in plan.reasons[8:12])


def test_flat_prices_with_degradation_cost_idle() -> None:
    plan = solve(
        plan_input(
            [20.0] * 48,
            pe=20.0,
            load=0.0,
            battery=Battery(degradation_p_per_kwh=2.0),
            terminal_value_p_per_kwh=20.0,
        )
    )
    assert np.allclose(plan.battery_power_kw, 0.0, atol=1e-6)
    assert all(r.startswith("holding") for r in plan.reasons)


def test_spread_smaller_than_losses_is_not_traded() -> None:
    # 10p → 11p: 10% spread, below the round-trip loss (0.9 ** 2 ≈ 0.81) even with zero degradation
    pi = [10.0] * 12 + [11.0] * 12
    b = Battery(charge_efficiency=0.9, discharge_efficiency=0.9, degradation_p_per_kwh=0.0)
    plan = solve(plan_input(pi, pe=0.0, load=1.0, battery=b, soc=10, terminal_value_p_per_kwh=0.0))
    assert np.allclose(plan.charge_kw, 0.0, atol=1e-6)
    assert any("below round-trip loss" in r for r in plan.reasons[:12])
    # the same with a wide spread is traded
    wide = solve(
        plan_input(
            [10.0] * 12 + [30.0] * 12, pe=0.0, load=1.0, battery=b, soc=10, terminal_value_p_per_kwh=0.0
        )
    )
    assert wide.charge_kw[:12].sum() > 1.0
    assert any("cheapest" in r for r in wide.reasons[:12])


def test_demand_charge_caps_import_peak() -> None:
    load = [1.0] * 16 + [6.0] * 4 + [1.0] * 4  # evening peak of 6 kW
    pi = [15.0] * 24
    free = solve(plan_input(pi, load=load, soc=100, terminal_value_p_per_kwh=15.0))
    assert free.import_kw.max() > 5.9  # flat price, degradation: no reason to shave
    dc = Strategy(demand_charge=DemandCharge(p_per_kw=1000.0, billed_peak_kw=2.0))
    capped = solve(plan_input(pi, load=load, soc=100, strategy=dc, terminal_value_p_per_kwh=15.0))
    assert capped.peak_import_kw is not None
    assert capped.import_kw.max() <= capped.peak_import_kw + 1e-6
    assert capped.import_kw.max() < 3.0
    # the month's billed peak is a floor: no flexibility spent pushing below it
    assert capped.peak_import_kw >= 2.0 - 1e-9
    assert any("demand charge" in r for r in capped.reasons)


def test_reserve_above_current_soc_without_charge_power_is_relaxed_and_explained() -> None:
    b = Battery(max_charge_kw=0.0)
    plan = solve(plan_input([20.0] * 8, soc=15, battery=b, strategy=Strategy(reserve_soc_pct=50)))
    assert plan.status == "Optimal"
    kinds = {r.kind for r in plan.relaxations}
    assert RelaxationKind.SOC_BELOW_MIN in kinds
    r = plan.relaxations[0]
    assert "reserve 50%" in r.reason and "0.0 kW" in r.reason
    assert "RELAXED soc_below_min" in plan.reasons[0]


def test_export_limit_against_forced_discharge_is_relaxed_and_explained() -> None:
    dispatch = Dispatch(start=T0, end=T0 + timedelta(hours=1), power_kw=5.0, reference="dfs-1")
    plan = solve(
        plan_input(
            [20.0] * 8,
            load=0.0,
            soc=90,
            site=Site(export_limit_kw=3.0),
            strategy=Strategy(dispatches=(dispatch,)),
        )
    )
    assert plan.status == "Optimal"
    assert plan.export_kw[:2].max() <= 3.0 + 1e-6  # the grid limit holds, the dispatch gives way
    forced = [r for r in plan.relaxations if r.kind == RelaxationKind.FORCED_POWER]
    assert len(forced) == 2
    assert "export limit 3.0 kW" in forced[0].reason


def test_forced_dispatch_is_followed_within_limits() -> None:
    dispatch = Dispatch(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2), power_kw=3.0)
    plan = solve(plan_input([20.0] * 8, soc=80, strategy=Strategy(dispatches=(dispatch,))))
    assert np.allclose(plan.battery_power_kw[2:4], 3.0)
    assert plan.reasons[2].startswith("dispatch: discharging at 3.0 kW")
    assert not plan.relaxations


def test_manual_window_idle_and_charge() -> None:
    w = (
        TimeWindow(T0, T0 + timedelta(hours=1), WindowMode.CHARGE, 2.0),
        TimeWindow(T0 + timedelta(hours=1), T0 + timedelta(hours=4), WindowMode.IDLE),
    )
    plan = solve(plan_input([30.0] * 12, soc=50, strategy=Strategy(windows=w)))
    assert np.allclose(plan.battery_power_kw[:2], -2.0)
    assert np.allclose(plan.battery_power_kw[2:8], 0.0)


def _lp_columns(x: np.ndarray, t: int) -> dict[str, np.ndarray]:
    """The solution's own columns (lp.py's layout), before anything is derived from them."""
    from nattery_trading.optimiser import lp

    def col(*blocks: int) -> np.ndarray:
        return sum((x[b * t : (b + 1) * t] for b in blocks), np.zeros(t))

    return {
        "import": col(lp.GI, lp.GIX),
        "export": col(lp.GE, lp.GEX),
        "charge": col(lp.C),
        "discharge": col(lp.D),
        "curtailed": col(lp.CU),
    }


@pytest.mark.parametrize("exact", [False, True])
def test_never_imports_and_exports_in_the_same_slot(exact: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # negative import prices against a fixed 15p export: the LP relaxation imports and exports at once
    from nattery_trading.optimiser import lp

    rng = np.random.default_rng(3)
    pi = np.concatenate([rng.uniform(-5, 14, 24), rng.uniform(20, 35, 24)])
    inp = plan_input(pi, pe=15.0, load=0.4, pv=0.3, soc=50, terminal_value_p_per_kwh=10.0)
    # the bare relaxation really splits (so the assertions below can fail)
    _, x0, _ = lp._solve(lp.build(inp), mip=False)
    raw = _lp_columns(x0, 48)
    assert (np.minimum(raw["import"], raw["export"]) > 1e-3).any()
    # record the columns of the solution solve() keeps (its last HiGHS answer of the chosen model)
    answers: list[np.ndarray] = []
    real_solve = lp._solve

    def recording(m: object, mip: bool) -> tuple[str, np.ndarray, float]:
        out = real_solve(m, mip)  # type: ignore[arg-type]
        answers.append(out[1])
        return out

    monkeypatch.setattr(lp, "_solve", recording)
    plan = solve(inp, exact=exact)
    assert plan.status == "Optimal"
    assert plan.method != "lp"  # the relaxation was not exclusive: the fix kicked in
    assert plan.split_slots == ()
    cols = next(
        c
        for c in (_lp_columns(a, 48) for a in reversed(answers))
        if np.allclose(c["charge"], plan.charge_kw) and np.allclose(c["import"], plan.import_kw)
    )
    assert (np.minimum(cols["import"], cols["export"]) < 1e-6).all()
    assert (np.minimum(cols["charge"], cols["discharge"]) < 1e-6).all()
    # the plan reports those columns as they are, not netted
    assert np.array_equal(plan.import_kw, cols["import"]) and np.array_equal(plan.export_kw, cols["export"])
    # energy balance holds slot by slot
    bal = (
        cols["import"] - cols["export"] + cols["discharge"] - cols["charge"] - (0.4 - 0.3 + cols["curtailed"])
    )
    assert np.allclose(bal, 0.0, atol=1e-6)


def test_a_split_that_survives_is_marked_not_netted(monkeypatch: pytest.MonkeyPatch) -> None:
    """If neither the fix-up passes nor the exact model remove a split, the plan says so."""
    from nattery_trading.optimiser import lp

    rng = np.random.default_rng(3)
    pi = np.concatenate([rng.uniform(-5, 14, 24), rng.uniform(20, 35, 24)])
    inp = plan_input(pi, pe=15.0, load=0.4, pv=0.3, soc=50, terminal_value_p_per_kwh=10.0)
    monkeypatch.setattr(lp, "_fix_modes", lambda *a: None)  # the fix-up does nothing
    monkeypatch.setattr(lp, "FIX_PASSES", 0)
    monkeypatch.setattr(lp, "_add_exclusivity", lambda *a: None)  # the "exact" model is the relaxation
    plan = solve(inp)
    assert plan.split_slots
    i = plan.split_slots[0]
    assert plan.import_kw[i] > 1e-5 and plan.export_kw[i] > 1e-5  # shown as solved, not netted away
    assert "SPLIT" in plan.reasons[i]


def test_direction_fix_is_close_to_the_mip() -> None:
    rng = np.random.default_rng(5)
    pi = np.concatenate([rng.uniform(-8, 14, 30), rng.uniform(18, 40, 18)])
    inp = plan_input(pi, pe=15.0, load=0.5, soc=50, terminal_value_p_per_kwh=15.0)
    fast, exact = solve(inp), solve(inp, exact=True)
    assert fast.objective_p <= exact.objective_p + max(1.0, 0.01 * abs(exact.objective_p))


def test_self_consumption_strategy_never_trades_with_the_grid() -> None:
    pi = [5.0] * 12 + [40.0] * 12
    pv = [0.0] * 6 + [3.0] * 6 + [0.0] * 12
    plan = solve(plan_input(pi, pe=1.0, load=1.0, pv=pv, soc=10, strategy=Strategy(kind="self_consumption")))
    net = 1.0 - np.asarray(pv)
    assert (plan.charge_kw <= np.maximum(-net, 0) + 1e-6).all()
    assert (plan.discharge_kw <= np.maximum(net, 0) + 1e-6).all()


def test_soc_and_power_limits_hold() -> None:
    rng = np.random.default_rng(7)
    plan = solve(plan_input(rng.uniform(0, 40, 96), pe=4.0, soc=50))
    b = Battery()
    assert plan.soc_pct.min() >= b.soc_min_pct - 1e-6 and plan.soc_pct.max() <= b.soc_max_pct + 1e-6
    assert plan.charge_kw.max() <= b.max_charge_kw + 1e-6
    assert plan.discharge_kw.max() <= b.max_discharge_kw + 1e-6
    assert len(plan.reasons) == 96 and all(plan.reasons)


def _batch() -> BatchInputs:
    return BatchInputs(
        now=T0,
        start=T0,
        strategies={},
        tariffs={},
        known_prices={},
        forecasts={},
        histories={},
        states={},
        dispatches={},
    )


def test_end_of_horizon_value_is_never_negative_and_spans_one_day() -> None:
    # A quarter of the day's prices negative: the lower quartile is negative, the value of a kept kWh is not.
    day = np.array([-20.0] * 16 + [15.0] * 32)
    assert float(np.quantile(day, 0.25)) < 0
    assert _batch().recent_quartile(day, 48) == 0.0
    # One-minute slots: the day is 1,440 slots (48 of them were only the first 48 minutes).
    minutes = np.concatenate([np.full(48, 30.0), np.full(1392, 5.0)])
    assert _batch().recent_quartile(minutes, 24 * 60) == pytest.approx(5.0)


def test_negative_prices_at_the_horizon_end_fill_the_battery_instead_of_emptying_it() -> None:
    # The horizon ends in eight hours of negative prices (a third of the day), the site at 50 %: with the
    # product's end-of-horizon value the plan is paid to charge and ends full; with the lower quartile as
    # it was (negative) it emptied the battery to its minimum, as the e2e loop test saw.
    pi = np.array([15.0] * 32 + [-20.0] * 16)
    battery = Battery()
    value = _batch().recent_quartile(pi, 48) / battery.charge_efficiency
    plan = solve(plan_input(pi, pi - 5.0, soc=50.0, battery=battery, terminal_value_p_per_kwh=value))
    assert plan.status == "Optimal"
    assert plan.soc_pct[-1] == pytest.approx(battery.soc_max_pct)
    assert plan.charge_kw[32:].sum() > 10.0
