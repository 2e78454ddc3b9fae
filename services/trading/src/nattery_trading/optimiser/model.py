"""Inputs and outputs of the battery optimiser (pure data, no I/O).

Units: power in kW, energy in kWh, prices in pence per kWh, time UTC. Signs follow ARCHITECTURE.md §3:
battery power > 0 discharging, < 0 charging; grid power > 0 importing, < 0 exporting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Battery:
    """One battery behind one inverter.

    ``degradation_p_per_kwh`` is the wear cost of one kWh cycled (charged and later discharged); the
    optimiser charges half of it on every kWh charged and half on every kWh discharged (AC side).
    """

    capacity_kwh: float = 10.0
    max_charge_kw: float = 5.0
    max_discharge_kw: float = 5.0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    soc_min_pct: float = 10.0
    soc_max_pct: float = 100.0
    degradation_p_per_kwh: float = 2.0

    def __post_init__(self) -> None:
        if self.capacity_kwh <= 0:
            raise ValueError("capacity_kwh must be > 0")
        if not (0 < self.charge_efficiency <= 1 and 0 < self.discharge_efficiency <= 1):
            raise ValueError("efficiencies must be in (0, 1]")
        if not 0 <= self.soc_min_pct <= self.soc_max_pct <= 100:
            raise ValueError("need 0 <= soc_min_pct <= soc_max_pct <= 100")
        if self.max_charge_kw < 0 or self.max_discharge_kw < 0 or self.degradation_p_per_kwh < 0:
            raise ValueError("power limits and degradation cost must be >= 0")

    @property
    def round_trip_efficiency(self) -> float:
        return self.charge_efficiency * self.discharge_efficiency


@dataclass(frozen=True)
class Site:
    """The connection point: one meter, optional import and export limits (kW)."""

    import_limit_kw: float = math.inf
    export_limit_kw: float = math.inf
    allow_pv_curtailment: bool = True


@dataclass(frozen=True)
class DemandCharge:
    """A charge per kW of the period's highest import (30-min average in GB).

    ``billed_peak_kw`` is the peak already incurred in the billing period: it is a floor, the plan never
    spends flexibility pushing imports below it. ``p_per_kw`` is the charge for the whole period, so the
    optimiser weighs it once, not per slot. ``window`` (optional, one flag per slot) limits the charge to
    some hours (e.g. weekday peak)."""

    p_per_kw: float
    billed_peak_kw: float = 0.0
    window: tuple[bool, ...] | None = None


class WindowMode(StrEnum):
    CHARGE = "charge"  # charge at power_kw (from grid or PV)
    DISCHARGE = "discharge"  # discharge at power_kw
    HOLD = "hold"  # never discharge (charging from surplus allowed)
    IDLE = "idle"  # neither charge nor discharge


@dataclass(frozen=True)
class TimeWindow:
    """A manual instruction over ``[start, end)``."""

    start: datetime
    end: datetime
    mode: WindowMode
    power_kw: float = 0.0


@dataclass(frozen=True)
class Dispatch:
    """A forced battery power over ``[start, end)`` (> 0 discharge), e.g. a flexibility-market dispatch."""

    start: datetime
    end: datetime
    power_kw: float
    reference: str = ""


StrategyKind = Literal["arbitrage", "self_consumption"]


@dataclass(frozen=True)
class Strategy:
    """What the battery is allowed to do.

    - ``arbitrage``: free to charge from the grid and discharge to the grid when it pays.
    - ``self_consumption``: charges only from PV surplus, discharges only to cover the site's load.
    Peak shaving is a ``demand_charge``; manual time windows and dispatches are layered on either kind.
    """

    kind: StrategyKind = "arbitrage"
    reserve_soc_pct: float = 0.0
    demand_charge: DemandCharge | None = None
    windows: tuple[TimeWindow, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()


@dataclass(frozen=True)
class PlanInput:
    """Everything one plan needs. Arrays have one value per slot starting at ``start``."""

    start: datetime
    slot_minutes: int
    import_price_p_per_kwh: FloatArray
    export_price_p_per_kwh: FloatArray
    load_kw: FloatArray
    pv_kw: FloatArray
    initial_soc_pct: float
    battery: Battery = field(default_factory=Battery)
    site: Site = field(default_factory=Site)
    strategy: Strategy = field(default_factory=Strategy)
    # Value of one kWh left in the battery after the last slot (pence). ``None``: no value.
    terminal_value_p_per_kwh: float | None = None

    def __post_init__(self) -> None:
        n = len(self.import_price_p_per_kwh)
        for name in ("export_price_p_per_kwh", "load_kw", "pv_kw"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} slots, import price has {n}")
        if n == 0:
            raise ValueError("a plan needs at least one slot")
        if self.slot_minutes <= 0:
            raise ValueError("slot_minutes must be > 0")

    @property
    def slots(self) -> int:
        return len(self.import_price_p_per_kwh)

    @property
    def dt_h(self) -> float:
        return self.slot_minutes / 60.0

    def slot_start(self, i: int) -> datetime:
        return self.start + timedelta(minutes=self.slot_minutes * i)


class RelaxationKind(StrEnum):
    SOC_BELOW_MIN = "soc_below_min"
    SOC_ABOVE_MAX = "soc_above_max"
    IMPORT_LIMIT = "import_limit"
    EXPORT_LIMIT = "export_limit"
    FORCED_POWER = "forced_power"


@dataclass(frozen=True)
class Relaxation:
    """A hard limit the plan could not keep, by how much, and why."""

    slot: int
    kind: RelaxationKind
    amount: float  # kWh for SOC, kW for power
    reason: str


@dataclass
class Plan:
    """The optimiser's answer, one value per slot."""

    start: datetime
    slot_minutes: int
    battery_power_kw: FloatArray  # > 0 discharging
    charge_kw: FloatArray
    discharge_kw: FloatArray
    grid_kw: FloatArray  # > 0 importing
    import_kw: FloatArray
    export_kw: FloatArray
    curtailed_pv_kw: FloatArray
    soc_pct: FloatArray  # at the end of each slot
    objective_p: float
    status: str
    solve_ms: float
    used_mip: bool
    peak_import_kw: float | None = None
    # "lp" (the relaxation was exclusive, hence optimal), "lp-fixed-direction" or "mip"
    method: str = "lp"
    # objective distance from the LP relaxation's bound (0 when method == "lp")
    bound_gap_p: float = 0.0
    relaxations: list[Relaxation] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # slots where the answer still imports and exports (or charges and discharges) at once after the
    # exact model: one meter/inverter cannot do that within one instruction (empty in every case seen)
    split_slots: tuple[int, ...] = ()
    # per slot: whether an idle slot runs self-consumption on the inverter (see ``instruction.py``);
    # False where a manual hold/idle window or a zero-power dispatch applies. None (hand-made plans:
    # emergency-stop hold, solver fallback): every idle slot holds.
    idle_self_consumption: NDArray[np.bool_] | None = None

    @property
    def slots(self) -> int:
        return len(self.battery_power_kw)
