"""Readings the safety envelope relies on, each with the time it was read.

The envelope decides on the battery's SOC and temperature and the grid power. A value read once and
never again (the block holding it stopped answering, the port is gone) must not keep authorising a
charge or a discharge: each reading carries the monotonic time of the poll that produced it, and a
reading older than ``max_age_s`` (or never read) counts as missing. Missing readings refuse every moving
mode (charge, discharge) until fresh ones arrive.

The poller only updates this object; whoever must react to a new reading at once (the temperature
guard) subscribes to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .envelope import Live

# Telemetry names of the readings the envelope needs, and the Live field each feeds.
REQUIRED: dict[str, str] = {
    "battery_soc_pct": "soc_pct",
    "battery_temperature_c": "battery_temp_c",
    "grid_power_w": "grid_power_w",
}
OPTIONAL: dict[str, str] = {"battery_voltage_v": "battery_voltage_v"}


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    at: float  # monotonic time of the poll that read it


class Readings:
    """The latest envelope readings with their times; ``clock`` is monotonic seconds."""

    def __init__(self, max_age_s: float, clock: Callable[[], float]) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._values: dict[str, Reading] = {}
        self._subscribers: list[Callable[[Mapping[str, float]], None]] = []

    def subscribe(self, fn: Callable[[Mapping[str, float]], None]) -> None:
        """Call ``fn`` with the values after every update."""
        self._subscribers.append(fn)

    def update(self, values: Mapping[str, float], at: float | None = None) -> None:
        """A poll's decoded values; a block that failed leaves its values out, so they age instead of
        being repeated."""
        t = self.clock() if at is None else at
        for name in (*REQUIRED, *OPTIONAL):
            if name in values:
                self._values[name] = Reading(float(values[name]), t)
        for fn in self._subscribers:
            fn(values)

    def get(self, name: str) -> Reading | None:
        return self._values.get(name)

    def age_s(self, name: str) -> float | None:
        r = self._values.get(name)
        return None if r is None else self.clock() - r.at

    def problems(self) -> list[str]:
        """Why the envelope's readings cannot be trusted now (empty = all fresh)."""
        out: list[str] = []
        now = self.clock()
        for name in REQUIRED:
            r = self._values.get(name)
            if r is None:
                out.append(f"{name} never read")
            elif now - r.at > self.max_age_s:
                out.append(f"{name} {now - r.at:.0f} s old (max {self.max_age_s:g} s)")
        return out

    @property
    def fresh(self) -> bool:
        return not self.problems()

    def live(self) -> Live:
        """The snapshot the envelope and the strategy use: stale or missing values are None."""
        now = self.clock()
        kw: dict[str, float | None] = {}
        for name, field_name in (*REQUIRED.items(), *OPTIONAL.items()):
            r = self._values.get(name)
            kw[field_name] = r.value if r is not None and now - r.at <= self.max_age_s else None
        return Live(**kw)
