"""Simulated time: one clock for the physics, the energy counters' midnight and the inverter's RTC.

``SimClock.now()`` is ``start + factor * (monotonic wall time elapsed)``: with ``--time-factor 720`` a
simulated day passes in two wall minutes while the serial line keeps real time. The monotonic source is
injectable so that tests move wall time by hand instead of waiting for it.

:func:`substeps` cuts one physics step (which at a high factor covers many simulated minutes) into
bounded sub-steps that never straddle a simulated midnight, so SOC limits, curtailment and the
*today* counters stay right whatever the factor.
"""

from __future__ import annotations

import math
import time
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

Monotonic = Callable[[], float]

TIME_FACTOR_ENV = "NATTERY_SIM_TIME_FACTOR"
START_TIME_ENV = "NATTERY_SIM_START_TIME"


def time_factor(text: str) -> float:
    """``--time-factor`` / ``$NATTERY_SIM_TIME_FACTOR``: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise ArgumentTypeError(f"time factor must be a number >= 0, not {text!r}")
    return value


class SimClock:
    """Simulated time: ``start`` + wall time elapsed * ``factor`` (0 freezes the physics).

    ``monotonic`` is the wall clock (seconds, any origin); tests pass a fake one and move it."""

    def __init__(
        self, start: datetime, factor: float = 1.0, *, monotonic: Monotonic = time.monotonic
    ) -> None:
        if not (factor >= 0 and math.isfinite(factor)):
            raise ValueError(f"time factor must be a finite number >= 0, not {factor!r}")
        self.start = start if start.tzinfo else start.replace(tzinfo=UTC)
        self.factor = factor
        self.monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self.monotonic() - self._t0) * self.factor)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward at once (tests drive the clock instead of waiting for it)."""
        self.start += timedelta(seconds=seconds)

    def set_factor(self, factor: float) -> None:
        """Change the speed from now on; simulated time does not jump."""
        if not (factor >= 0 and math.isfinite(factor)):
            raise ValueError(f"time factor must be a finite number >= 0, not {factor!r}")
        now, t = self.now(), self.monotonic()
        self.start, self._t0, self.factor = now, t, factor


def next_midnight(t: datetime) -> datetime:
    """The first midnight after ``t`` in ``t``'s time zone (the inverter clock's)."""
    return datetime.combine(t.date() + timedelta(days=1), datetime.min.time(), tzinfo=t.tzinfo)


def substeps(end: datetime, dt_s: float, max_step_s: float) -> Iterator[tuple[datetime, datetime, float]]:
    """Cut the step of ``dt_s`` seconds ending at ``end`` into sub-steps ``(begin, end, seconds)``: none
    longer than ``max_step_s``, split at every midnight inside the step (a sub-step may end exactly at
    midnight, none crosses one). Each sub-step begins where the previous one ended; the seconds add up
    to ``dt_s``. A step of at most ``max_step_s`` that crosses no midnight is yielded whole."""
    if dt_s <= 0:
        return
    start = end - timedelta(seconds=dt_s)
    done = 0.0  # seconds since ``start`` already yielded
    t0 = start
    while done < dt_s:
        seg_s = dt_s - done
        midnight = next_midnight(t0)
        if midnight < end:
            seg_s = min(seg_s, (midnight - t0).total_seconds())
        n = max(1, math.ceil(seg_s / max_step_s - 1e-9))
        h = seg_s / n
        for k in range(1, n + 1):
            secs = seg_s - h * (n - 1) if k == n else h
            if k < n:
                t1 = start + timedelta(seconds=done + h * k)
            elif done + seg_s >= dt_s:
                t1 = end
            else:
                t1 = midnight
            yield t0, t1, secs
            t0 = t1
        done += seg_s
