"""The SOC a time-of-use program is written with (pure arithmetic).

An inverter's program SOC is a whole percent, and it charges (or discharges) only while the battery is
below (above) it. Rounding a slot's target to the nearest percent could land on where the battery
already is, and the slot would then do nothing: round towards where the slot is going, but never past
the site's SOC limits (a limit may be fractional). The bridge writes these values (``DeyeStrategy``),
and trading's back-test models the inverter with the same ones.
"""

from __future__ import annotations

import math


def charge_target_pct(soc_pct: float, soc_max_pct: float) -> int:
    """The program SOC a CHARGE slot charges up to: rounded up, never above the site's maximum."""
    return min(math.ceil(soc_pct - 1e-6), math.floor(soc_max_pct + 1e-6))


def discharge_target_pct(soc_pct: float, soc_min_pct: float) -> int:
    """The program SOC a DISCHARGE slot discharges down to: rounded down, never below the site's minimum."""
    return max(math.floor(soc_pct + 1e-6), math.ceil(soc_min_pct - 1e-6))
