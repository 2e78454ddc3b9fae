"""Battery temperature window: outside it the battery holds (no charge, no discharge), latched.

The guard latches as soon as a fresh reading is outside ``battery_temp_min_c .. battery_temp_max_c``.
While latched the bridge writes HOLD (charge and discharge currents zero), whatever the active control
says. It releases only when the temperature has been back inside the window *by the hysteresis*
(``min + hysteresis_c .. max - hysteresis_c``) on every reading for ``release_after_s``: one reading
just inside the edge, or a battery cooling by a tenth of a degree, does not restart the flow that
heated it. A missing or stale reading never releases the latch (it cannot prove the battery cooled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nattery_contracts.mqtt import SafetyLimits


@dataclass(frozen=True, slots=True)
class GuardChange:
    latched: bool  # the new state
    temperature_c: float
    reason: str


class TemperatureGuard:
    def __init__(self, hysteresis_c: float, release_after_s: float, clock: Callable[[], float]) -> None:
        self.hysteresis_c = hysteresis_c
        self.release_after_s = release_after_s
        self.clock = clock
        self.latched = False
        self.latched_at: float | None = None
        self._inside_since: float | None = None  # first reading inside the release band, latched only

    def release_band(self, limits: SafetyLimits) -> tuple[float, float]:
        lo = limits.battery_temp_min_c + self.hysteresis_c
        hi = limits.battery_temp_max_c - self.hysteresis_c
        if lo > hi:  # a window narrower than twice the hysteresis: release at its middle only
            lo = hi = (limits.battery_temp_min_c + limits.battery_temp_max_c) / 2
        return lo, hi

    def observe(self, temperature_c: float | None, limits: SafetyLimits) -> GuardChange | None:
        """Feed a fresh reading (None = missing/stale); returns the change of state, if any."""
        now = self.clock()
        if temperature_c is None:
            self._inside_since = None
            return None
        lo, hi = limits.battery_temp_min_c, limits.battery_temp_max_c
        if not lo <= temperature_c <= hi:
            self._inside_since = None
            if not self.latched:
                self.latched = True
                self.latched_at = now
                return GuardChange(
                    True, temperature_c, f"battery temperature {temperature_c:.1f} C outside {lo:g}..{hi:g} C"
                )
            return None
        if not self.latched:
            return None
        rlo, rhi = self.release_band(limits)
        if not rlo <= temperature_c <= rhi:
            self._inside_since = None
            return None
        if self._inside_since is None:
            self._inside_since = now
        if now - self._inside_since >= self.release_after_s:
            self.latched = False
            self.latched_at = None
            self._inside_since = None
            return GuardChange(
                False,
                temperature_c,
                f"battery temperature {temperature_c:.1f} C inside {rlo:g}..{rhi:g} C "
                f"for {self.release_after_s:g} s",
            )
        return None
