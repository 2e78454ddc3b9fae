"""The fail-safe state machine: what should run now, and making the inverter run it.

Control sources, highest first:

1. **emergency stop** (command or SIGUSR1 locally): latched and persisted; survives restarts, expiry and
   link loss; released only by a later control command (``issued_at`` after the stop).
2. **set_mode / set_power**: valid until ``expires_at``, and only while the cloud link is up or has been
   down for less than ``link_grace_s``.
3. **set_schedule**: slots executed locally by the bridge until ``valid_until``, also offline; between
   slots the safe program runs.
4. **safe program** (self-consumption within the envelope).

Whenever (2) or (3) ends without a new control (expiry, link lost, battery out of its temperature
window) the bridge writes the safe program and publishes ``failsafe.activated`` with the reason.

Above (2)-(4) and below (1): the **temperature guard** (``temperature_guard.py``): outside the battery's
temperature window the inverter holds (both currents zero), latched until the temperature has been back
inside the window by a hysteresis for a while. **Stale or missing readings** (``freshness.py``) turn a
charge or discharge into the safe program until fresh ones arrive. Every control's validity is bounded
at receipt (``lifetime.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from nattery_contracts.mqtt import EventSeverity

from . import envelope, slots
from .active_control import Active, ActiveControl
from .bus import Priority
from .drift import DriftCheck
from .envelope import Live, Target
from .freshness import Readings
from .inverter_writer import InverterWriter
from .limits import SiteLimits
from .metrics import Metrics
from .publisher import Publisher
from .rtu import ModbusError
from .temperature_guard import TemperatureGuard

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(
        self,
        *,
        control: ActiveControl,
        writer: InverterWriter,
        drift: DriftCheck,
        readings: Readings,
        guard: TemperatureGuard,
        limits: SiteLimits,
        publisher: Publisher,
        metrics: Metrics,
        link_grace_s: float,
        interval_s: float,
        link_down_for: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self.control = control
        self.writer = writer
        self.drift = drift
        self.readings = readings
        self.guard = guard
        self.limits = limits
        self.publisher = publisher
        self.metrics = metrics
        self.link_grace_s = link_grace_s
        self.interval_s = interval_s
        self.link_down_for = link_down_for
        self.now = clock
        self._stale_reported = False
        readings.subscribe(self.on_readings)

    # ------------------------------------------------------------ temperature
    def on_readings(self, _values: Mapping[str, float]) -> None:
        """Every telemetry poll: the temperature guard sees the newest reading at once."""
        self.evaluate_temperature()

    def evaluate_temperature(self) -> None:
        """Latch or release the temperature hold on the latest fresh reading and the limits in force."""
        change = self.guard.observe(self.readings.live().battery_temp_c, self.limits.operating)
        if change is None:
            return
        self.metrics.temperature_hold.set(1 if change.latched else 0)
        if change.latched:
            log.warning("temperature hold latched: %s", change.reason)
            self.publisher.event(
                "temperature.hold",
                EventSeverity.CRITICAL,
                f"battery holds (no charge, no discharge): {change.reason}",
                temperature_c=change.temperature_c,
                hysteresis_c=self.guard.hysteresis_c,
                release_after_s=self.guard.release_after_s,
            )
            a = self.control.active
            if a is not None and a.kind in ("mode", "power"):
                # a one-off control ends here (the cloud re-plans); a schedule is only overridden
                self.end_control("envelope", detail=change.reason)
        else:
            log.info("temperature hold released: %s", change.reason)
            self.publisher.event(
                "temperature.released", EventSeverity.INFO, f"battery may move again: {change.reason}",
                temperature_c=change.temperature_c,
            )  # fmt: skip

    # ------------------------------------------------------------ what should run now
    def desired(self, now: datetime) -> tuple[Target | None, str | None]:
        """(target, failsafe reason). Target None = emergency stop."""
        a = self.control.active
        if a is None:
            return slots.SAFE, None
        if a.kind == "estop":
            return None, None
        if a.expires_at is not None and now >= a.expires_at:
            return slots.SAFE, "schedule_expired" if a.kind == "schedule" else "control_expired"
        if a.kind == "schedule":
            assert a.schedule is not None
            return slots.target_at(a.schedule, now), None
        if self.link_down_for() > self.link_grace_s:
            return slots.SAFE, "link_lost"
        assert a.target is not None
        return a.target, None

    async def tick(self) -> None:
        """Apply what should run now; called every ``control_check_interval_s`` and at start."""
        target, reason = self.desired(self.now())
        if target is None:  # emergency stop latched: make sure it is on the inverter
            if not self.writer.applied_estop:
                await self.writer.apply_estop()
            elif self.drift.due:
                await self.drift.verify()
            return
        if reason is not None and self.control.active is not None:
            self.end_control(reason)
        target = self._override(target)
        if target.mode in slots.MOVING:
            # Reaching soc_max / soc_min is the program's own end (its SOC target and the shutdown SOC
            # stop the flow on the inverter); only the temperature window ends a running control.
            live = self.readings.live()
            decision = envelope.check(
                target, self.limits.operating, Live(None, live.battery_temp_c, live.battery_voltage_v)
            )
            if not decision.allowed:
                if self.control.active is not None:
                    self.end_control("envelope", detail=decision.reason)
                target = slots.SAFE
            else:
                target = decision.target
        w = self.writer
        if target != w.applied:
            async with w.lock:
                # re-check: a command may have applied exactly this while we waited for the lock
                if self.control.estop or target == w.applied:
                    return
                try:
                    await w.apply(target, priority=Priority.COMMAND)
                except ModbusError as e:
                    log.warning("could not apply %s: %s", target.mode.value, e)
        elif self.drift.due:
            await self.drift.verify()

    def _override(self, target: Target) -> Target:
        """HOLD instead of ``target`` while the temperature guard is latched or the readings are stale."""
        stale = self.readings.problems()
        self.metrics.readings_stale.set(1 if stale else 0)
        if self.guard.latched:
            target = slots.HOLD  # outside (or not yet back inside) the temperature window: both currents 0
        elif stale:
            # Blind (SOC, temperature or grid power stale or missing): no program that moves the
            # battery, not even self-consumption, until fresh readings arrive; the control is kept.
            if not self._stale_reported:
                self._stale_reported = True
                self.metrics.failsafe.labels("stale_readings").inc()
                a = self.control.active
                self.publisher.event(
                    "readings.stale",
                    EventSeverity.WARNING,
                    "envelope readings stale or missing; the battery holds: " + "; ".join(stale),
                    problems=stale,
                    control=a.to_json() if a else None,
                )
            target = slots.HOLD
        if not stale and self._stale_reported:
            self._stale_reported = False
            self.publisher.event("readings.fresh", EventSeverity.INFO, "envelope readings fresh again")
        return target

    def end_control(self, reason: str, detail: str | None = None) -> None:
        """The active control ends without a new one: the safe program takes over, and the cloud is told."""
        a = self.control.active
        previous: dict[str, Any] = a.to_json() if a else {}
        self.control.set(None)
        log.warning("fail-safe: %s (%s)", reason, detail or "")
        self.metrics.failsafe.labels(reason).inc()
        self.publisher.event(
            "failsafe.activated",
            EventSeverity.WARNING,
            f"inverter returned to the safe program: {reason}" + (f" ({detail})" if detail else ""),
            reason=reason,
            previous=previous,
            **({"detail": detail} if detail else {}),
        )

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("control tick failed")
                self.metrics.errors.labels("control_tick").inc()
            await asyncio.sleep(self.interval_s)

    async def local_emergency_stop(self, source: str = "local") -> None:
        """Emergency stop without the cloud (signal, local button): latched like the command."""
        self.control.set(Active("estop", f"local-{uuid.uuid4()}", self.now(), None))
        self.publisher.event(
            "emergency_stop", EventSeverity.CRITICAL, f"emergency stop ({source})", source=source
        )
        try:
            await self.writer.apply_estop()
        except ModbusError as e:
            log.error("emergency stop write failed (will retry): %s", e)
