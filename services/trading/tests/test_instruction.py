"""The one slot -> edge instruction mapping, shared by the schedule publisher and the back-test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from nattery_contracts.mqtt import BatteryMode
from nattery_trading.backtest import engine
from nattery_trading.optimiser import PlanInput, Strategy, TimeWindow, WindowMode, solve
from nattery_trading.optimiser.instruction import slot_instruction, slot_modes
from nattery_trading.schedules import service
from nattery_trading.schedules.service import _hold_plan

T0 = datetime(2022, 6, 1, tzinfo=UTC)


def _inp(strategy: Strategy | None = None) -> PlanInput:
    # cheap night, dear evening, flat middle where holding pays nothing: every kind of slot
    pi = np.array([5.0] * 8 + [20.0] * 24 + [40.0] * 8 + [20.0] * 8)
    return PlanInput(
        start=T0,
        slot_minutes=30,
        import_price_p_per_kwh=pi,
        export_price_p_per_kwh=np.full(48, 4.0),
        load_kw=np.full(48, 0.5),
        pv_kw=np.concatenate([np.zeros(14), np.full(10, 1.5), np.zeros(24)]),
        initial_soc_pct=20.0,
        strategy=strategy or Strategy(),
    )


def test_publisher_and_backtest_use_the_same_function() -> None:
    # the publisher maps a whole plan at once (slot_modes), the back-test slot by slot: the same mapping
    assert service.slot_modes is slot_modes
    assert engine.slot_instruction is slot_instruction
    w_hold = TimeWindow(T0 + timedelta(hours=16), T0 + timedelta(hours=20), WindowMode.HOLD)
    w_idle = TimeWindow(T0 + timedelta(hours=2), T0 + timedelta(hours=4), WindowMode.IDLE)
    plans = [solve(_inp()), solve(_inp(Strategy(windows=(w_hold, w_idle)))), _hold_plan(_inp(), "stop")]
    for plan in plans:
        assert slot_modes(plan) == [slot_instruction(plan, i).mode.value for i in range(48)]
    assert {m for plan in plans for m in slot_modes(plan)} >= {"charge", "self_consumption", "hold"}


def test_modes_of_a_plan() -> None:
    plan = solve(_inp())
    modes = [slot_instruction(plan, i).mode for i in range(48)]
    assert BatteryMode.CHARGE in modes  # cheap night: charging from the grid
    assert BatteryMode.SELF_CONSUMPTION in modes
    for i, m in enumerate(modes):
        b = plan.battery_power_kw[i]
        inst = slot_instruction(plan, i)
        if m is BatteryMode.CHARGE:
            assert b < 0 and plan.import_kw[i] > 0 and inst.battery_power_w == round(b, 4) * 1000
            assert inst.target_soc_pct == round(float(plan.soc_pct[i]), 3)
        elif m is BatteryMode.DISCHARGE:
            assert b > 0 and plan.export_kw[i] > 0
    # idle slots run self-consumption on the inverter: nothing forces a hold here
    idle = [i for i in range(48) if abs(plan.battery_power_kw[i]) <= 0.02]
    assert idle and all(modes[i] is BatteryMode.SELF_CONSUMPTION for i in idle)


def test_manual_hold_and_idle_windows_and_hold_plans_hold() -> None:
    w_hold = TimeWindow(T0 + timedelta(hours=16), T0 + timedelta(hours=20), WindowMode.HOLD)
    w_idle = TimeWindow(T0 + timedelta(hours=2), T0 + timedelta(hours=4), WindowMode.IDLE)
    plan = solve(_inp(Strategy(windows=(w_hold, w_idle))))
    for i in range(4, 8):  # idle window: neither charge nor discharge, and the edge holds
        assert slot_instruction(plan, i).mode is BatteryMode.HOLD
    for i in range(32, 40):  # hold window over the dear evening: never discharges
        assert slot_instruction(plan, i).mode in (BatteryMode.HOLD, BatteryMode.CHARGE)
        assert slot_instruction(plan, i).mode is not BatteryMode.SELF_CONSUMPTION
    # an emergency stop's hold plan holds in every slot
    stop = _hold_plan(_inp(), "stop")
    assert {slot_instruction(stop, i).mode for i in range(48)} == {BatteryMode.HOLD}
