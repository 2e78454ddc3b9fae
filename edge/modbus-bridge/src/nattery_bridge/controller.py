"""Commands, the active control and the fail-safe state machine.

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
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from nattery_contracts.modbus.registers import Block, RegisterMap, group_blocks, store_value
from nattery_contracts.mqtt import (
    AckStatus,
    BatteryMode,
    Command,
    CommandAck,
    CommandType,
    EdgeEvent,
    EventSeverity,
    SafetyLimits,
    SetLimitsParams,
    SetModeParams,
    SetPowerParams,
    SetScheduleParams,
    TopicSuffix,
    topic,
)

from . import envelope, lifetime
from .bus import Bus, Priority
from .control import ApplyResult, ControlStrategy, VerifyError, apply_plan
from .envelope import Decision, Live, Target
from .freshness import Readings
from .metrics import Metrics
from .rtu import ModbusError, RtuMaster
from .settings import BridgeSettings
from .store import Store
from .temperature_guard import TemperatureGuard

log = logging.getLogger(__name__)

SAFE = Target(BatteryMode.SELF_CONSUMPTION)
HOLD = Target(BatteryMode.HOLD)
MOVING = (BatteryMode.CHARGE, BatteryMode.DISCHARGE)


def utcnow() -> datetime:
    return datetime.now(UTC)


class EmergencyStopActive(ModbusError):
    kind = "estop_active"


@dataclass
class Active:
    """The persisted control. ``kind``: mode | power | schedule | estop."""

    kind: str
    command_id: str
    issued_at: datetime
    expires_at: datetime | None
    target: Target | None = None
    schedule: SetScheduleParams | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "command_id": self.command_id,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "target": self.target.describe() if self.target else None,
            "schedule": self.schedule.model_dump(mode="json") if self.schedule else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Active:
        t = d.get("target")
        return cls(
            kind=str(d["kind"]),
            command_id=str(d["command_id"]),
            issued_at=datetime.fromisoformat(d["issued_at"]),
            expires_at=datetime.fromisoformat(d["expires_at"]) if d.get("expires_at") else None,
            target=Target(BatteryMode(t["mode"]), float(t["power_w"] or 0), t["target_soc_pct"])
            if t
            else None,
            schedule=SetScheduleParams.model_validate(d["schedule"]) if d.get("schedule") else None,
        )


class Controller:
    def __init__(
        self,
        settings: BridgeSettings,
        store: Store,
        bus: Bus,
        rmap: RegisterMap,
        strategy: ControlStrategy,
        metrics: Metrics,
        *,
        link_down_for: Callable[[], float],
        wake_outbox: Callable[[], None],
        request_refresh: Callable[[], None],
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.now = clock  # wall clock (expiry); tests drive both clocks
        self.mono = monotonic
        self.store = store
        self.bus = bus
        self.rmap = rmap
        self.strategy = strategy
        self.metrics = metrics
        self.link_down_for = link_down_for
        self.wake_outbox = wake_outbox
        self.request_refresh = request_refresh
        s = settings
        self.readings = Readings(s.readings_max_age_s, monotonic)
        self.guard = TemperatureGuard(s.temperature_hysteresis_c, s.temperature_release_after_s, monotonic)
        self._stale_reported = False
        self.ack_topic = topic(s.site, s.device, TopicSuffix.COMMAND_ACK)
        self.event_topic = topic(s.site, s.device, TopicSuffix.EVENT)
        raw = store.get_json("control")
        self.active: Active | None = Active.from_json(raw) if raw else None
        if self.active is not None and self.active.expires_at is not None:  # stored by an older bridge
            cap = self.lifetime_cap_s(self.active.kind)
            lt = lifetime.clamp(self.active.expires_at, self.now(), cap, "expires_at")
            self.active.expires_at = lt.expires_at
        self.applied: Target | None = None  # what the inverter was last set to (None = unknown)
        self.applied_estop = False
        self.applied_plan: dict[str, float] | None = None
        self._limits: SafetyLimits | None = None
        self._hard = settings.limits.safety()
        self._last_apply = 0.0
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reassert_s = settings.drift_check_interval_s

    # ------------------------------------------------------------ readings
    @property
    def live(self) -> Live:
        """The envelope's readings now; stale or missing ones are None."""
        return self.readings.live()

    def observe_readings(self, values: dict[str, float]) -> None:
        """A telemetry poll's decoded values (called by the poller for every group cycle)."""
        self.readings.update(values)
        self._evaluate_temperature()

    def _evaluate_temperature(self) -> None:
        """Latch or release the temperature hold on the latest fresh reading and the limits in force."""
        change = self.guard.observe(self.readings.live().battery_temp_c, self.limits)
        if change is None:
            return
        self.metrics.temperature_hold.set(1 if change.latched else 0)
        if change.latched:
            log.warning("temperature hold latched: %s", change.reason)
            self.publish_event(
                "temperature.hold",
                EventSeverity.CRITICAL,
                f"battery holds (no charge, no discharge): {change.reason}",
                temperature_c=change.temperature_c,
                hysteresis_c=self.guard.hysteresis_c,
                release_after_s=self.guard.release_after_s,
            )
            a = self.active
            if a is not None and a.kind in ("mode", "power"):
                # a one-off control ends here (the cloud re-plans); a schedule is only overridden
                previous = a.to_json()
                self._set_active(None)
                self._failsafe("envelope", previous, detail=change.reason)
        else:
            log.info("temperature hold released: %s", change.reason)
            self.publish_event(
                "temperature.released", EventSeverity.INFO, f"battery may move again: {change.reason}",
                temperature_c=change.temperature_c,
            )  # fmt: skip

    def lifetime_cap_s(self, kind: str) -> float:
        s = self.settings
        return s.max_schedule_lifetime_s if kind == "schedule" else s.max_control_lifetime_s

    # ------------------------------------------------------------ limits
    @property
    def hard_limits(self) -> SafetyLimits:
        return self._hard

    @property
    def limits(self) -> SafetyLimits:
        """Operating limits: the persisted admin limits if they are inside the hard limits (the local
        configuration may have been narrowed since), else the hard limits."""
        if self._limits is None:
            self._limits = self.hard_limits
            raw = self.store.get_json("limits")
            if raw:
                try:
                    lim = SafetyLimits.model_validate(raw)
                    if not envelope.within(lim, self.hard_limits):
                        self._limits = lim
                except ValidationError:
                    pass
        return self._limits

    @property
    def estop(self) -> bool:
        return self.active is not None and self.active.kind == "estop"

    # ------------------------------------------------------------ outputs
    def publish_ack(
        self, cmd_id: str, status: AckStatus, reason: str | None = None, applied: dict[str, Any] | None = None
    ) -> CommandAck:
        ack = CommandAck(
            id=uuid.UUID(cmd_id),
            status=status,
            reason=reason[:500] if reason else None,
            applied=applied or {},
            ts=self.now(),
        )
        self.store.record_command(cmd_id, ack.model_dump(mode="json"))
        self._enqueue("ack", self.ack_topic, ack.model_dump_json().encode())
        return ack

    def publish_event(self, code: str, severity: EventSeverity, message: str, **details: Any) -> None:
        ev = EdgeEvent(ts=self.now(), code=code, severity=severity, message=message[:500], details=details)
        self._enqueue("event", self.event_topic, ev.model_dump_json().encode())

    def _enqueue(self, kind: str, t: str, payload: bytes) -> None:
        dropped = self.store.enqueue(kind, t, payload)
        if dropped:
            self.metrics.outbox_dropped.inc(dropped.rows)
        self.wake_outbox()

    def _set_active(self, active: Active | None) -> None:
        self.active = active
        self.store.set_json("control", active.to_json() if active else None)

    # ------------------------------------------------------------ what should run now
    def desired(self, now: datetime) -> tuple[Target | None, str | None]:
        """(target, failsafe reason). Target None = emergency stop."""
        a = self.active
        if a is None:
            return SAFE, None
        if a.kind == "estop":
            return None, None
        if a.expires_at is not None and now >= a.expires_at:
            return SAFE, "schedule_expired" if a.kind == "schedule" else "control_expired"
        if a.kind == "schedule":
            assert a.schedule is not None
            for slot in a.schedule.slots:
                if slot.start <= now < slot.end:
                    return _slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct), None
            return SAFE, None
        if self.link_down_for() > self.settings.link_grace_s:
            return SAFE, "link_lost"
        assert a.target is not None
        return a.target, None

    async def tick(self) -> None:
        """Apply what should run now; called every ``control_check_interval_s`` and at start."""
        now = self.now()
        target, reason = self.desired(now)
        if target is None:  # emergency stop latched: make sure it is on the inverter
            if not self.applied_estop:
                await self._apply_estop()
            elif self.mono() - self._last_apply > self.reassert_s:
                await self._verify()
            return
        if reason is not None and self.active is not None:
            previous = self.active.to_json()
            self._set_active(None)
            self._failsafe(reason, previous)
        stale = self.readings.problems()
        self.metrics.readings_stale.set(1 if stale else 0)
        if self.guard.latched:
            target = HOLD  # outside (or not yet back inside) the temperature window: both currents 0
        elif stale:
            # Blind (SOC, temperature or grid power stale or missing): no program that moves the
            # battery, not even self-consumption, until fresh readings arrive; the control is kept.
            if not self._stale_reported:
                self._stale_reported = True
                self.metrics.failsafe.labels("stale_readings").inc()
                self.publish_event(
                    "readings.stale",
                    EventSeverity.WARNING,
                    "envelope readings stale or missing; the battery holds: " + "; ".join(stale),
                    problems=stale,
                    control=self.active.to_json() if self.active else None,
                )
            target = HOLD
        if not stale and self._stale_reported:
            self._stale_reported = False
            self.publish_event("readings.fresh", EventSeverity.INFO, "envelope readings fresh again")
        if target.mode in MOVING:
            # Reaching soc_max / soc_min is the program's own end (its SOC target and the shutdown SOC
            # stop the flow on the inverter); only the temperature window ends a running control.
            live = Live(None, self.live.battery_temp_c, self.live.battery_voltage_v)
            decision = envelope.check(target, self.limits, live)
            if not decision.allowed:
                if self.active is not None:
                    previous = self.active.to_json()
                    self._set_active(None)
                    self._failsafe("envelope", previous, detail=decision.reason)
                target = SAFE
            else:
                target = decision.target
        if target != self.applied:
            async with self._lock:
                # re-check: a command may have applied exactly this while we waited for the lock
                if self.estop or target == self.applied:
                    return
                try:
                    await self._apply(target, priority=Priority.COMMAND)
                except ModbusError as e:
                    log.warning("could not apply %s: %s", target.mode.value, e)
        elif self.mono() - self._last_apply > self.reassert_s:
            await self._verify()

    async def _verify(self) -> None:
        """Drift check (settings that "take, then revert", kellerza/sunsynk#331): read the registers
        last written, one poll-priority transaction per block so a command never waits behind more
        than one of them; on a difference, re-apply at command priority on the next tick."""
        plan = self.applied_plan
        self._last_apply = self.mono()
        if not plan:
            return
        points = [self.rmap[n] for n in plan]
        regs: dict[int, int] = {}
        for b in group_blocks(points, max_registers=self.settings.serial.max_read_registers, max_gap=16):

            async def read(master: RtuMaster, b: Block = b) -> list[int]:
                return await master.read_holding(b.start, b.count, kind="verify")

            try:
                words = await self.bus.submit(Priority.POLL, read)
            except ModbusError as e:
                log.info("drift check skipped: %s", e)
                return
            regs.update(zip(range(b.start, b.start + b.count), words, strict=True))
        if plan is not self.applied_plan:  # a command changed things meanwhile
            return
        desired = dict(regs)
        for name, value in plan.items():
            store_value(self.rmap[name], value, desired)
        drift = sorted(a for p in points for a in p.addresses if desired[a] != regs[a])
        if drift:
            log.warning("control registers drifted: %s", drift)
            self.metrics.register_mismatches.labels("drift").inc()
            self.publish_event(
                "control.drift",
                EventSeverity.WARNING,
                "inverter settings differ from what the bridge wrote; re-applying",
                registers=drift,
            )
            self.applied = None
            self.applied_estop = False

    def _failsafe(self, reason: str, previous: dict[str, Any], detail: str | None = None) -> None:
        log.warning("fail-safe: %s (%s)", reason, detail or "")
        self.metrics.failsafe.labels(reason).inc()
        self.publish_event(
            "failsafe.activated",
            EventSeverity.WARNING,
            f"inverter returned to the safe program: {reason}" + (f" ({detail})" if detail else ""),
            reason=reason,
            previous=previous,
            **({"detail": detail} if detail else {}),
        )

    async def _write_plan(
        self, plan: dict[str, float], priority: Priority, kind: str, *, estop: bool = False
    ) -> ApplyResult:
        """Read-compare-write-verify ``plan``; a read-back that differs from what was written is
        reported (event, metric) and the plan written once more at once."""

        async def job(master: RtuMaster) -> ApplyResult:
            if not estop and self.estop:  # an emergency stop overtook this job in the queue
                raise EmergencyStopActive("emergency stop active")
            return await apply_plan(
                master, self.rmap, plan, max_read=self.settings.serial.max_read_registers, kind=kind
            )

        try:
            return await self.bus.submit(priority, job)
        except VerifyError as e:
            self.metrics.register_mismatches.labels("readback").inc()
            log.warning("read-back mismatch, re-applying: %s", e)
            self.publish_event(
                "control.readback_mismatch",
                EventSeverity.WARNING,
                f"inverter registers read back different from what was written; re-applying: {e}",
                registers=e.registers,
            )
            return await self.bus.submit(priority, job)

    async def _apply(self, target: Target, priority: Priority = Priority.COMMAND) -> ApplyResult:
        plan = self.strategy.plan(target, self.limits, self.live)
        self.applied = None  # unknown while writing (partial writes possible)
        self.applied_plan = None
        result = await self._write_plan(plan, priority, "command")
        self.applied = target
        self.applied_plan = plan
        self.applied_estop = False
        self._last_apply = self.mono()
        self.metrics.register_writes.inc(result.written_registers)
        self.metrics.write_skipped.inc(result.skipped_registers)
        return result

    async def _apply_estop(self) -> ApplyResult:
        plan = self.strategy.emergency_stop_plan(self.limits)
        self.applied = None
        self.applied_plan = None
        result = await self._write_plan(plan, Priority.EMERGENCY, "estop", estop=True)
        self.applied_estop = True
        self.applied_plan = plan
        self._last_apply = self.mono()
        self.metrics.register_writes.inc(result.written_registers)
        return result

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("control tick failed")
                self.metrics.errors.labels("control_tick").inc()
            await asyncio.sleep(self.settings.control_check_interval_s)

    async def local_emergency_stop(self, source: str = "local") -> None:
        """Emergency stop without the cloud (signal, local button): latched like the command."""
        self._set_active(Active("estop", f"local-{uuid.uuid4()}", self.now(), None))
        self.publish_event(
            "emergency_stop", EventSeverity.CRITICAL, f"emergency stop ({source})", source=source
        )
        try:
            await self._apply_estop()
        except ModbusError as e:
            log.error("emergency stop write failed (will retry): %s", e)

    # ------------------------------------------------------------ commands
    async def handle_command(self, raw: bytes) -> None:
        t0 = time.monotonic()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.publish_event("command.invalid", EventSeverity.WARNING, "command payload is not JSON")
            self.metrics.commands.labels("invalid").inc()
            return
        cmd_id = _command_id(data)
        if cmd_id is None:
            self.publish_event(
                "command.invalid", EventSeverity.WARNING, "command without a valid id", payload=str(raw[:200])
            )
            self.metrics.commands.labels("invalid").inc()
            return
        seen = self.store.seen_command(cmd_id)
        if seen is not None:  # idempotent: answer again with the last ack, never run twice
            ack = CommandAck.model_validate(seen)
            self._enqueue("ack", self.ack_topic, ack.model_dump_json().encode())
            self.metrics.commands.labels("duplicate").inc()
            return
        try:
            cmd = Command.model_validate(data)
            params = cmd.typed_params()
        except ValidationError as e:
            self._finish(cmd_id, "?", t0, AckStatus.REJECTED, f"invalid command: {_short(e)}")
            return
        if cmd.is_expired(self.now()):
            self._finish(cmd_id, cmd.type.value, t0, AckStatus.EXPIRED, "expires_at has passed")
            return
        try:
            await self._run_command(cmd, params, t0)
        except Exception as e:  # never crash on a command
            log.exception("command %s failed", cmd_id)
            self._finish(cmd_id, cmd.type.value, t0, AckStatus.FAILED, f"internal error: {e!r}")

    def _finish(
        self,
        cmd_id: str,
        ctype: str,
        t0: float,
        status: AckStatus,
        reason: str | None = None,
        applied: dict[str, Any] | None = None,
    ) -> None:
        self.publish_ack(cmd_id, status, reason, applied)
        self.metrics.commands.labels(status.value).inc()
        if status in (AckStatus.DONE, AckStatus.FAILED):
            self.metrics.command_latency.labels(ctype).observe(time.monotonic() - t0)

    async def _run_command(self, cmd: Command, params: Any, t0: float) -> None:
        cid, ctype = str(cmd.id), cmd.type.value
        limits = self.limits
        if cmd.type is CommandType.EMERGENCY_STOP:
            self._set_active(Active("estop", cid, cmd.issued_at, None))
            self.publish_ack(cid, AckStatus.ACCEPTED)
            try:
                res = await self._apply_estop()
            except ModbusError as e:
                self._finish(
                    cid,
                    ctype,
                    t0,
                    AckStatus.FAILED,
                    f"emergency stop latched, inverter write failed (retrying): {e}",
                )
                return
            self._finish(cid, ctype, t0, AckStatus.DONE, "emergency stop latched", _summary(res))
            return
        if cmd.type is CommandType.REFRESH:
            self.publish_ack(cid, AckStatus.ACCEPTED)
            self.request_refresh()
            self._finish(cid, ctype, t0, AckStatus.DONE, "telemetry poll requested")
            return
        if cmd.type is CommandType.SET_LIMITS:
            assert isinstance(params, SetLimitsParams)
            problems = envelope.within(params.limits, self.hard_limits)
            if problems:
                self._finish(
                    cid,
                    ctype,
                    t0,
                    AckStatus.REJECTED,
                    "outside the site's hard limits: " + "; ".join(problems),
                )
                return
            self.publish_ack(cid, AckStatus.ACCEPTED)
            self.store.set_json("limits", params.limits.model_dump(mode="json"))
            self._limits = None
            self._evaluate_temperature()  # a narrower window may put the battery outside it now
            self.applied = None  # re-apply the current program with the new limits on the next tick
            await self.tick()
            self._finish(
                cid, ctype, t0, AckStatus.DONE, None, {"limits": params.limits.model_dump(mode="json")}
            )
            return

        # control commands
        if self.estop and self.active is not None and cmd.issued_at <= self.active.issued_at:
            self._finish(cid, ctype, t0, AckStatus.REJECTED, "issued before the active emergency stop")
            return
        reasons: list[str] = []
        active: Active
        target: Target
        now = self.now()
        stale = self.readings.problems()
        if cmd.type is CommandType.SET_SCHEDULE:
            assert isinstance(params, SetScheduleParams)
            if params.valid_until <= now:
                self._finish(cid, ctype, t0, AckStatus.REJECTED, "valid_until has passed")
                return
            for i, slot in enumerate(params.slots):
                d = envelope.check(
                    _slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct), limits, Live()
                )
                if not d.allowed:
                    self._finish(cid, ctype, t0, AckStatus.REJECTED, f"slot {i}: {d.reason}")
                    return
                if d.reason:
                    reasons.append(f"slot {i}: {d.reason}")
            lt = lifetime.clamp(params.valid_until, now, self.lifetime_cap_s("schedule"), "valid_until")
            clamped = SetScheduleParams(
                slots=[_clamp_slot(s, limits) for s in params.slots], valid_until=lt.expires_at
            )
            active = Active("schedule", cid, cmd.issued_at, lt.expires_at, schedule=clamped)
            target = SAFE
            for slot in clamped.slots:
                if slot.start <= now < slot.end:
                    target = _slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct)
        else:
            if cmd.type is CommandType.SET_MODE:
                assert isinstance(params, SetModeParams)
                raw_target = Target(params.mode)
                kind = "mode"
            else:
                assert isinstance(params, SetPowerParams)
                raw_target = envelope.from_power(params.battery_power_w)
                kind = "power"
            moving = raw_target.mode in MOVING
            if moving and stale:
                self._finish(
                    cid, ctype, t0, AckStatus.REJECTED, "stale or missing readings: " + "; ".join(stale)
                )
                return
            if moving and self.guard.latched:
                self._finish(
                    cid, ctype, t0, AckStatus.REJECTED,
                    "temperature hold latched: the battery holds until its temperature is back inside "
                    "the window",
                )  # fmt: skip
                return
            decision: Decision = envelope.check(raw_target, limits, self.live)
            if not decision.allowed:
                self._finish(cid, ctype, t0, AckStatus.REJECTED, f"safety envelope: {decision.reason}")
                return
            if decision.reason:
                reasons.append(decision.reason)
            target = decision.target
            lt = lifetime.clamp(cmd.expires_at, now, self.lifetime_cap_s(kind), "expires_at")
            active = Active(kind, cid, cmd.issued_at, lt.expires_at, target=target)
        if lt.clamped:
            assert lt.reason is not None
            reasons.append(lt.reason)
            self.metrics.lifetime_clamped.inc()
        if target.mode in MOVING:
            d = envelope.check(target, limits, self.live)
            if not d.allowed:
                self._finish(cid, ctype, t0, AckStatus.REJECTED, f"safety envelope: {d.reason}")
                return
            target = d.target
        if self.guard.latched:
            reasons.append("temperature hold latched: the battery holds for now")
            target = HOLD
        elif stale and target.mode is not BatteryMode.HOLD:
            reasons.append("readings stale or missing, the battery holds for now: " + "; ".join(stale))
            target = HOLD
        self.publish_ack(cid, AckStatus.ACCEPTED, "; ".join(reasons) or None)
        async with self._lock:
            if self.estop and self.active is not None and cmd.issued_at <= self.active.issued_at:
                self._finish(cid, ctype, t0, AckStatus.FAILED, "emergency stop arrived first")
                return
            released = self.estop
            previous = self.active
            self._set_active(active)
            try:
                res = await self._apply(target)
            except ModbusError as e:
                if self.active is active:  # not overtaken by an emergency stop
                    self._set_active(previous)
                self._finish(cid, ctype, t0, AckStatus.FAILED, f"inverter write failed: {e}")
                return
        if released:
            reasons.append("emergency stop released")
        applied = {
            "target": target.describe(),
            "expires_at": lt.expires_at.isoformat(),
            **_summary(res),
            "queued_ms": round((res.started - t0) * 1000, 1),
        }
        self._finish(cid, ctype, t0, AckStatus.DONE, "; ".join(reasons) or None, applied)


def _slot_target(mode: BatteryMode, power_w: float, soc: float | None) -> Target:
    if mode in (BatteryMode.CHARGE, BatteryMode.DISCHARGE):
        return Target(mode, abs(power_w), soc)
    return Target(mode)


def _clamp_slot(slot: Any, limits: SafetyLimits) -> Any:
    t = _slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct)
    d = envelope.check(t, limits, Live())
    if not d.allowed or t.mode not in (BatteryMode.CHARGE, BatteryMode.DISCHARGE):
        return slot
    sign = -1 if t.mode is BatteryMode.CHARGE else 1
    return slot.model_copy(
        update={"battery_power_w": sign * d.target.power_w, "target_soc_pct": d.target.target_soc_pct}
    )


def _summary(res: ApplyResult) -> dict[str, Any]:
    return {
        "registers": res.applied,
        "written_registers": res.written_registers,
        "unchanged_registers": res.skipped_registers,
        "transactions": res.transactions,
        "bus_ms": round(res.bus_s * 1000, 1),
    }


def _command_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    try:
        return str(uuid.UUID(str(data.get("id"))))
    except ValueError:
        return None


def _short(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)
