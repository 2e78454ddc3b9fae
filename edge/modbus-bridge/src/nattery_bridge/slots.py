"""A schedule's slots as targets: which slot runs now, and each slot clamped to the envelope at receipt.

``services/trading``'s back-test models the inverter from these functions (its test imports them), so a
change here is a change of what the back-test assumes.
"""

from __future__ import annotations

from datetime import datetime

from nattery_contracts.mqtt import BatteryMode, SafetyLimits, ScheduleSlot, SetScheduleParams

from . import envelope
from .envelope import Live, Target

SAFE = Target(BatteryMode.SELF_CONSUMPTION)
HOLD = Target(BatteryMode.HOLD)
MOVING = (BatteryMode.CHARGE, BatteryMode.DISCHARGE)


def slot_target(mode: BatteryMode, power_w: float, soc: float | None) -> Target:
    """A slot's target: power (a magnitude) and SOC only for the modes that move the battery."""
    if mode in MOVING:
        return Target(mode, abs(power_w), soc)
    return Target(mode)


def clamp_slot(slot: ScheduleSlot, limits: SafetyLimits) -> ScheduleSlot:
    """The slot with its power and target SOC clamped to ``limits`` (a refused slot is left as is)."""
    t = slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct)
    d = envelope.check(t, limits, Live())
    if not d.allowed or t.mode not in MOVING:
        return slot
    sign = -1 if t.mode is BatteryMode.CHARGE else 1
    return slot.model_copy(
        update={"battery_power_w": sign * d.target.power_w, "target_soc_pct": d.target.target_soc_pct}
    )


def target_at(schedule: SetScheduleParams, now: datetime) -> Target:
    """What the schedule says at ``now``: the running slot's target, the safe program between slots."""
    for slot in schedule.slots:
        if slot.start <= now < slot.end:
            return slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct)
    return SAFE
