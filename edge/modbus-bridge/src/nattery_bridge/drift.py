"""Drift check: settings that "take, then revert" (kellerza/sunsynk#331), or that someone changed
behind the bridge's back, are found by reading the registers last written and comparing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nattery_contracts.modbus.registers import Block, RegisterMap, group_blocks, store_value
from nattery_contracts.mqtt import EventSeverity

from .bus import Bus, Priority
from .inverter_writer import InverterWriter
from .metrics import Metrics
from .publisher import Publisher
from .rtu import ModbusError, RtuMaster

log = logging.getLogger(__name__)


class DriftCheck:
    def __init__(
        self,
        bus: Bus,
        rmap: RegisterMap,
        writer: InverterWriter,
        *,
        interval_s: float,
        max_read_registers: int,
        publisher: Publisher,
        metrics: Metrics,
        monotonic: Callable[[], float],
    ) -> None:
        self.bus = bus
        self.rmap = rmap
        self.writer = writer
        self.interval_s = interval_s
        self.max_read_registers = max_read_registers
        self.publisher = publisher
        self.metrics = metrics
        self.mono = monotonic

    @property
    def due(self) -> bool:
        return self.mono() - self.writer.last_apply > self.interval_s

    async def verify(self) -> None:
        """Read the registers last written, one poll-priority transaction per block so a command never
        waits behind more than one of them; on a difference, report it and let the next tick re-apply
        at command priority."""
        w = self.writer
        plan = w.applied_plan
        w.last_apply = self.mono()
        if not plan:
            return
        points = [self.rmap[n] for n in plan]
        regs: dict[int, int] = {}
        for b in group_blocks(points, max_registers=self.max_read_registers, max_gap=16):

            async def read(master: RtuMaster, b: Block = b) -> list[int]:
                return await master.read_holding(b.start, b.count, kind="verify")

            try:
                words = await self.bus.submit(Priority.POLL, read)
            except ModbusError as e:
                log.info("drift check skipped: %s", e)
                return
            regs.update(zip(range(b.start, b.start + b.count), words, strict=True))
        if plan is not w.applied_plan:  # a command changed things meanwhile
            return
        desired = dict(regs)
        for name, value in plan.items():
            store_value(self.rmap[name], value, desired)
        drift = sorted(a for p in points for a in p.addresses if desired[a] != regs[a])
        if drift:
            log.warning("control registers drifted: %s", drift)
            self.metrics.register_mismatches.labels("drift").inc()
            self.publisher.event(
                "control.drift",
                EventSeverity.WARNING,
                "inverter settings differ from what the bridge wrote; re-applying",
                registers=drift,
            )
            w.forget()
