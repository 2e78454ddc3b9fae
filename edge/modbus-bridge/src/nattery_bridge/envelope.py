"""The site's safety envelope: every control target is checked here before it reaches the inverter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nattery_contracts.mqtt import BatteryMode, SafetyLimits


@dataclass(frozen=True, slots=True)
class Target:
    """What the battery should do. ``power_w`` is a magnitude (W) for charge/discharge."""

    mode: BatteryMode
    power_w: float = 0.0
    target_soc_pct: float | None = None

    def describe(self) -> dict[str, float | str | None]:
        return {"mode": self.mode.value, "power_w": self.power_w, "target_soc_pct": self.target_soc_pct}


@dataclass(frozen=True, slots=True)
class Live:
    """The latest readings the envelope depends on (None = not read yet)."""

    soc_pct: float | None = None
    battery_temp_c: float | None = None
    battery_voltage_v: float | None = None
    grid_power_w: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    target: Target
    reasons: list[str] = field(default_factory=list)

    @property
    def clamped(self) -> bool:
        return self.allowed and bool(self.reasons)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


def from_power(battery_power_w: float) -> Target:
    """A set-point in Nattery signs (+ discharge, - charge, 0 hold) as a target."""
    if battery_power_w > 0:
        return Target(BatteryMode.DISCHARGE, battery_power_w)
    if battery_power_w < 0:
        return Target(BatteryMode.CHARGE, -battery_power_w)
    return Target(BatteryMode.HOLD)


def check(target: Target, limits: SafetyLimits, live: Live) -> Decision:
    """Refuse what cannot be made safe, clamp what can (with the reasons)."""
    reasons: list[str] = []
    mode = target.mode
    if mode in (BatteryMode.SELF_CONSUMPTION, BatteryMode.HOLD):
        # The safe program and "hold" never leave the envelope: the strategy writes the limits.
        return Decision(True, replace(target, power_w=0.0, target_soc_pct=None))
    temp = live.battery_temp_c
    if temp is not None and not limits.battery_temp_min_c <= temp <= limits.battery_temp_max_c:
        return Decision(
            False,
            target,
            [
                f"battery temperature {temp:.1f} C outside "
                f"{limits.battery_temp_min_c:g}..{limits.battery_temp_max_c:g} C"
            ],
        )
    power = target.power_w
    soc = live.soc_pct
    if mode is BatteryMode.CHARGE:
        default_power = limits.max_charge_w
        if power <= 0:
            power = default_power
        if power > limits.max_charge_w:
            reasons.append(f"charge power {power:g} W clamped to max_charge_w {limits.max_charge_w:g} W")
            power = limits.max_charge_w
        tgt = target.target_soc_pct if target.target_soc_pct is not None else limits.soc_max_pct
        if tgt > limits.soc_max_pct:
            reasons.append(f"target SOC {tgt:g} % clamped to soc_max {limits.soc_max_pct:g} %")
            tgt = limits.soc_max_pct
        if tgt < limits.soc_min_pct:
            reasons.append(f"target SOC {tgt:g} % raised to soc_min {limits.soc_min_pct:g} %")
            tgt = limits.soc_min_pct
        if soc is not None and soc >= limits.soc_max_pct:
            return Decision(
                False, target, [f"battery SOC {soc:g} % at or above soc_max {limits.soc_max_pct:g} %"]
            )
    else:  # DISCHARGE
        if power <= 0:
            power = limits.max_discharge_w
        if power > limits.max_discharge_w:
            reasons.append(
                f"discharge power {power:g} W clamped to max_discharge_w {limits.max_discharge_w:g} W"
            )
            power = limits.max_discharge_w
        tgt = target.target_soc_pct if target.target_soc_pct is not None else limits.soc_min_pct
        if tgt < limits.soc_min_pct:
            reasons.append(f"target SOC {tgt:g} % raised to soc_min {limits.soc_min_pct:g} %")
            tgt = limits.soc_min_pct
        if tgt > limits.soc_max_pct:
            reasons.append(f"target SOC {tgt:g} % clamped to soc_max {limits.soc_max_pct:g} %")
            tgt = limits.soc_max_pct
        if soc is not None and soc <= limits.soc_min_pct:
            return Decision(
                False, target, [f"battery SOC {soc:g} % at or below soc_min {limits.soc_min_pct:g} %"]
            )
    return Decision(True, Target(mode, power, tgt), reasons)


def within(inner: SafetyLimits, outer: SafetyLimits) -> list[str]:
    """Why ``inner`` is not inside the installation's hard limits ``outer`` (empty = it is)."""
    problems: list[str] = []
    if inner.soc_min_pct < outer.soc_min_pct:
        problems.append(f"soc_min_pct {inner.soc_min_pct:g} below hard limit {outer.soc_min_pct:g}")
    if inner.soc_max_pct > outer.soc_max_pct:
        problems.append(f"soc_max_pct {inner.soc_max_pct:g} above hard limit {outer.soc_max_pct:g}")
    for name in ("max_charge_w", "max_discharge_w", "export_limit_w"):
        if getattr(inner, name) > getattr(outer, name):
            problems.append(f"{name} {getattr(inner, name):g} above hard limit {getattr(outer, name):g}")
    if inner.battery_temp_min_c < outer.battery_temp_min_c:
        problems.append(
            f"battery_temp_min_c {inner.battery_temp_min_c:g} below hard limit {outer.battery_temp_min_c:g}"
        )
    if inner.battery_temp_max_c > outer.battery_temp_max_c:
        problems.append(
            f"battery_temp_max_c {inner.battery_temp_max_c:g} above hard limit {outer.battery_temp_max_c:g}"
        )
    return problems
