"""Battery optimiser: a linear programme (MIP only where one meter's exclusivity needs it) on HiGHS."""

from nattery_trading.optimiser.lp import solve
from nattery_trading.optimiser.model import (
    Battery,
    DemandCharge,
    Dispatch,
    Plan,
    PlanInput,
    Relaxation,
    RelaxationKind,
    Site,
    Strategy,
    TimeWindow,
    WindowMode,
)

__all__ = [
    "Battery",
    "DemandCharge",
    "Dispatch",
    "Plan",
    "PlanInput",
    "Relaxation",
    "RelaxationKind",
    "Site",
    "Strategy",
    "TimeWindow",
    "WindowMode",
    "solve",
]
