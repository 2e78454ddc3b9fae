"""Commands from the cloud: identified, de-duplicated, validated, then run by the handler of their type.

Every command with a valid id gets acks (``accepted`` when it is taken on, then ``done``, ``failed``,
``rejected`` or ``expired``); the last ack is stored with the id, so a command delivered twice is
answered again with that ack and never run twice. The control commands (``set_mode``, ``set_power``,
``set_schedule``) share one path: each type only turns its parameters into a control (or refuses),
and :func:`_run_control` checks it against the envelope, the emergency stop, the temperature guard and
the readings' freshness, bounds its lifetime, and applies it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nattery_contracts.mqtt import (
    AckStatus,
    BatteryMode,
    Command,
    CommandAck,
    CommandType,
    EventSeverity,
    SafetyLimits,
    SetLimitsParams,
    SetModeParams,
    SetPowerParams,
    SetScheduleParams,
)

from . import command_parse, envelope, lifetime, slots
from .active_control import Active, ActiveControl, lifetime_cap_s
from .control import ApplyResult
from .envelope import Live, Target
from .failsafe import Supervisor
from .freshness import Readings
from .inverter_writer import InverterWriter
from .limits import SiteLimits
from .metrics import Metrics
from .publisher import Publisher
from .rtu import ModbusError
from .settings import BridgeSettings
from .store import Store
from .temperature_guard import TemperatureGuard

log = logging.getLogger(__name__)


class CommandProcessor:
    def __init__(
        self,
        *,
        settings: BridgeSettings,
        store: Store,
        publisher: Publisher,
        control: ActiveControl,
        writer: InverterWriter,
        supervisor: Supervisor,
        limits: SiteLimits,
        readings: Readings,
        guard: TemperatureGuard,
        metrics: Metrics,
        request_refresh: Callable[[], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.control = control
        self.writer = writer
        self.supervisor = supervisor
        self.limits = limits
        self.readings = readings
        self.guard = guard
        self.metrics = metrics
        self.request_refresh = request_refresh
        self.now = clock

    async def handle(self, raw: bytes) -> None:
        t0 = time.monotonic()
        ident = command_parse.identify(raw)
        if isinstance(ident, command_parse.Unidentified):
            self.publisher.event("command.invalid", EventSeverity.WARNING, ident.reason, **ident.details)
            self.metrics.commands.labels("invalid").inc()
            return
        cmd_id = ident.cmd_id
        seen = self.store.seen_command(cmd_id)
        if seen is not None:  # idempotent: answer again with the last ack, never run twice
            self.publisher.resend_ack(CommandAck.model_validate(seen))
            self.metrics.commands.labels("duplicate").inc()
            return
        parsed = command_parse.validate(ident.data)
        if isinstance(parsed, command_parse.Invalid):
            Run(self, cmd_id, "?", t0).finish(AckStatus.REJECTED, parsed.reason)
            return
        cmd = parsed.command
        run = Run(self, cmd_id, cmd.type.value, t0)
        if cmd.is_expired(self.now()):
            run.finish(AckStatus.EXPIRED, "expires_at has passed")
            return
        try:
            await HANDLERS[cmd.type](self, run, cmd, parsed.params)
        except Exception as e:  # never crash on a command
            log.exception("command %s failed", cmd_id)
            run.finish(AckStatus.FAILED, f"internal error: {e!r}")


@dataclass
class Run:
    """One command on its way: every ack it gets is published and stored with its id."""

    proc: CommandProcessor
    cmd_id: str
    ctype: str
    t0: float  # monotonic receipt time (latency)

    def ack(
        self, status: AckStatus, reason: str | None = None, applied: dict[str, Any] | None = None
    ) -> None:
        ack = self.proc.publisher.ack(self.cmd_id, status, reason, applied)
        self.proc.store.record_command(self.cmd_id, ack.model_dump(mode="json"))

    def finish(
        self, status: AckStatus, reason: str | None = None, applied: dict[str, Any] | None = None
    ) -> None:
        self.ack(status, reason, applied)
        m = self.proc.metrics
        m.commands.labels(status.value).inc()
        if status in (AckStatus.DONE, AckStatus.FAILED):
            m.command_latency.labels(self.ctype).observe(time.monotonic() - self.t0)


Handler = Callable[[CommandProcessor, Run, Command, Any], Awaitable[None]]


# ---------------------------------------------------------------- emergency stop, refresh, limits


async def _emergency_stop(p: CommandProcessor, run: Run, cmd: Command, _params: Any) -> None:
    p.control.set(Active("estop", str(cmd.id), cmd.issued_at, None))
    run.ack(AckStatus.ACCEPTED)
    try:
        res = await p.writer.apply_estop()
    except ModbusError as e:
        run.finish(AckStatus.FAILED, f"emergency stop latched, inverter write failed (retrying): {e}")
        return
    run.finish(AckStatus.DONE, "emergency stop latched", _summary(res))


async def _refresh(p: CommandProcessor, run: Run, _cmd: Command, _params: Any) -> None:
    run.ack(AckStatus.ACCEPTED)
    p.request_refresh()
    run.finish(AckStatus.DONE, "telemetry poll requested")


async def _set_limits(p: CommandProcessor, run: Run, _cmd: Command, params: Any) -> None:
    assert isinstance(params, SetLimitsParams)
    problems = p.limits.problems(params.limits)
    if problems:
        run.finish(AckStatus.REJECTED, "outside the site's hard limits: " + "; ".join(problems))
        return
    run.ack(AckStatus.ACCEPTED)
    p.limits.set(params.limits)
    p.supervisor.evaluate_temperature()  # a narrower window may put the battery outside it now
    p.writer.applied = None  # re-apply the current program with the new limits on the next tick
    await p.supervisor.tick()
    run.finish(AckStatus.DONE, None, {"limits": params.limits.model_dump(mode="json")})


# ---------------------------------------------------------------- controls


@dataclass
class ControlPlan:
    """What a control command asks for, checked at receipt: the control to persist and the target to
    write now, with the reasons of every clamp."""

    active: Active
    target: Target
    expires: lifetime.Lifetime
    reasons: list[str] = field(default_factory=list)


Planner = Callable[[CommandProcessor, Command, Any, SafetyLimits, datetime], ControlPlan | str]


def _plan_schedule(
    p: CommandProcessor, cmd: Command, params: Any, limits: SafetyLimits, now: datetime
) -> ControlPlan | str:
    assert isinstance(params, SetScheduleParams)
    if params.valid_until <= now:
        return "valid_until has passed"
    reasons: list[str] = []
    for i, slot in enumerate(params.slots):
        d = envelope.check(
            slots.slot_target(slot.mode, slot.battery_power_w, slot.target_soc_pct), limits, Live()
        )
        if not d.allowed:
            return f"slot {i}: {d.reason}"
        if d.reason:
            reasons.append(f"slot {i}: {d.reason}")
    lt = lifetime.clamp(params.valid_until, now, lifetime_cap_s(p.settings, "schedule"), "valid_until")
    clamped = SetScheduleParams(
        slots=[slots.clamp_slot(s, limits) for s in params.slots], valid_until=lt.expires_at
    )
    active = Active("schedule", str(cmd.id), cmd.issued_at, lt.expires_at, schedule=clamped)
    return ControlPlan(active, slots.target_at(clamped, now), lt, reasons)


def _one_off(kind: str, to_target: Callable[[Any], Target]) -> Planner:
    """``set_mode`` / ``set_power``: one target until ``expires_at``, refused at once when it would move
    the battery blind or while the temperature hold is latched."""

    def plan(
        p: CommandProcessor, cmd: Command, params: Any, limits: SafetyLimits, now: datetime
    ) -> ControlPlan | str:
        raw_target = to_target(params)
        stale = p.readings.problems()
        moving = raw_target.mode in slots.MOVING
        if moving and stale:
            return "stale or missing readings: " + "; ".join(stale)
        if moving and p.guard.latched:
            return (
                "temperature hold latched: the battery holds until its temperature is back inside the window"
            )
        decision = envelope.check(raw_target, limits, p.readings.live())
        if not decision.allowed:
            return f"safety envelope: {decision.reason}"
        lt = lifetime.clamp(cmd.expires_at, now, lifetime_cap_s(p.settings, kind), "expires_at")
        active = Active(kind, str(cmd.id), cmd.issued_at, lt.expires_at, target=decision.target)
        return ControlPlan(active, decision.target, lt, [decision.reason] if decision.reason else [])

    return plan


def _mode_target(params: Any) -> Target:
    assert isinstance(params, SetModeParams)
    return Target(params.mode)


def _power_target(params: Any) -> Target:
    assert isinstance(params, SetPowerParams)
    return envelope.from_power(params.battery_power_w)


def _control(planner: Planner) -> Handler:
    async def handler(p: CommandProcessor, run: Run, cmd: Command, params: Any) -> None:
        await _run_control(p, run, cmd, params, planner)

    return handler


async def _run_control(p: CommandProcessor, run: Run, cmd: Command, params: Any, planner: Planner) -> None:
    limits = p.limits.operating
    if p.control.issued_before_estop(cmd.issued_at):
        run.finish(AckStatus.REJECTED, "issued before the active emergency stop")
        return
    now = p.now()
    stale = p.readings.problems()
    plan = planner(p, cmd, params, limits, now)
    if isinstance(plan, str):
        run.finish(AckStatus.REJECTED, plan)
        return
    reasons, target, lt = plan.reasons, plan.target, plan.expires
    if lt.clamped:
        assert lt.reason is not None
        reasons.append(lt.reason)
        p.metrics.lifetime_clamped.inc()
    if target.mode in slots.MOVING:
        d = envelope.check(target, limits, p.readings.live())
        if not d.allowed:
            run.finish(AckStatus.REJECTED, f"safety envelope: {d.reason}")
            return
        target = d.target
    if p.guard.latched:
        reasons.append("temperature hold latched: the battery holds for now")
        target = slots.HOLD
    elif stale and target.mode is not BatteryMode.HOLD:
        reasons.append("readings stale or missing, the battery holds for now: " + "; ".join(stale))
        target = slots.HOLD
    run.ack(AckStatus.ACCEPTED, "; ".join(reasons) or None)
    async with p.writer.lock:
        if p.control.issued_before_estop(cmd.issued_at):
            run.finish(AckStatus.FAILED, "emergency stop arrived first")
            return
        released = p.control.estop
        previous = p.control.active
        p.control.set(plan.active)
        try:
            res = await p.writer.apply(target)
        except ModbusError as e:
            if p.control.active is plan.active:  # not overtaken by an emergency stop
                p.control.set(previous)
            run.finish(AckStatus.FAILED, f"inverter write failed: {e}")
            return
    if released:
        reasons.append("emergency stop released")
    applied = {
        "target": target.describe(),
        "expires_at": lt.expires_at.isoformat(),
        **_summary(res),
        "queued_ms": round((res.started - run.t0) * 1000, 1),
    }
    run.finish(AckStatus.DONE, "; ".join(reasons) or None, applied)


HANDLERS: dict[CommandType, Handler] = {
    CommandType.EMERGENCY_STOP: _emergency_stop,
    CommandType.REFRESH: _refresh,
    CommandType.SET_LIMITS: _set_limits,
    CommandType.SET_MODE: _control(_one_off("mode", _mode_target)),
    CommandType.SET_POWER: _control(_one_off("power", _power_target)),
    CommandType.SET_SCHEDULE: _control(_plan_schedule),
}


def _summary(res: ApplyResult) -> dict[str, Any]:
    return {
        "registers": res.applied,
        "written_registers": res.written_registers,
        "unchanged_registers": res.skipped_registers,
        "transactions": res.transactions,
        "bus_ms": round(res.bus_s * 1000, 1),
    }
