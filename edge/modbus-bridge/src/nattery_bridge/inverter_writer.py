"""Writes programs to the inverter and remembers what it wrote.

One lock serialises the control tick and command application, so a command and the tick never write
over each other; a job that an emergency stop overtook in the bus queue refuses to run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nattery_contracts.modbus.registers import RegisterMap
from nattery_contracts.mqtt import EventSeverity

from .active_control import ActiveControl
from .bus import Bus, Priority
from .control import ApplyResult, ControlStrategy, VerifyError, apply_plan
from .envelope import Target
from .freshness import Readings
from .limits import SiteLimits
from .metrics import Metrics
from .publisher import Publisher
from .rtu import ModbusError, RtuMaster

log = logging.getLogger(__name__)


class EmergencyStopActive(ModbusError):
    kind = "estop_active"


class InverterWriter:
    def __init__(
        self,
        bus: Bus,
        rmap: RegisterMap,
        strategy: ControlStrategy,
        *,
        max_read_registers: int,
        control: ActiveControl,
        limits: SiteLimits,
        readings: Readings,
        publisher: Publisher,
        metrics: Metrics,
        monotonic: Callable[[], float],
    ) -> None:
        self.bus = bus
        self.rmap = rmap
        self.strategy = strategy
        self.max_read_registers = max_read_registers
        self.control = control
        self.limits = limits
        self.readings = readings
        self.publisher = publisher
        self.metrics = metrics
        self.mono = monotonic
        self.lock = asyncio.Lock()
        self.applied: Target | None = None  # what the inverter was last set to (None = unknown)
        self.applied_estop = False
        self.applied_plan: dict[str, float] | None = None  # the registers of that, by point name
        self.last_apply = 0.0  # monotonic: last write or drift check

    def forget(self) -> None:
        """The inverter no longer holds what was written: the next tick writes it again."""
        self.applied = None
        self.applied_estop = False

    async def apply(self, target: Target, priority: Priority = Priority.COMMAND) -> ApplyResult:
        plan = self.strategy.plan(target, self.limits.operating, self.readings.live())
        self.applied = None  # unknown while writing (partial writes possible)
        self.applied_plan = None
        result = await self._write_plan(plan, priority, "command")
        self.applied = target
        self.applied_plan = plan
        self.applied_estop = False
        self.last_apply = self.mono()
        self.metrics.register_writes.inc(result.written_registers)
        self.metrics.write_skipped.inc(result.skipped_registers)
        return result

    async def apply_estop(self) -> ApplyResult:
        plan = self.strategy.emergency_stop_plan(self.limits.operating)
        self.applied = None
        self.applied_plan = None
        result = await self._write_plan(plan, Priority.EMERGENCY, "estop", estop=True)
        self.applied_estop = True
        self.applied_plan = plan
        self.last_apply = self.mono()
        self.metrics.register_writes.inc(result.written_registers)
        return result

    async def _write_plan(
        self, plan: dict[str, float], priority: Priority, kind: str, *, estop: bool = False
    ) -> ApplyResult:
        """Read-compare-write-verify ``plan``; a read-back that differs from what was written is
        reported (event, metric) and the plan written once more at once."""

        async def job(master: RtuMaster) -> ApplyResult:
            if not estop and self.control.estop:  # an emergency stop overtook this job in the queue
                raise EmergencyStopActive("emergency stop active")
            return await apply_plan(master, self.rmap, plan, max_read=self.max_read_registers, kind=kind)

        try:
            return await self.bus.submit(priority, job)
        except VerifyError as e:
            self.metrics.register_mismatches.labels("readback").inc()
            log.warning("read-back mismatch, re-applying: %s", e)
            self.publisher.event(
                "control.readback_mismatch",
                EventSeverity.WARNING,
                f"inverter registers read back different from what was written; re-applying: {e}",
                registers=e.registers,
            )
            return await self.bus.submit(priority, job)
