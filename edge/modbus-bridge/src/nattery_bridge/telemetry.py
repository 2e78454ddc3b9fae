"""Telemetry polling: blocks from ``group_blocks``, one transaction per bus job, decoded from the map."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nattery_contracts.aio import wait_event
from nattery_contracts.modbus.registers import (
    Block,
    Group,
    Kind,
    RegisterMap,
    decode,
    decode_faults,
    group_blocks,
)
from nattery_contracts.mqtt import EventSeverity, Telemetry

from .bus import Bus, Priority
from .freshness import Readings
from .metrics import Metrics
from .publisher import Publisher
from .rtu import ModbusError, RtuMaster
from .settings import BridgeSettings

log = logging.getLogger(__name__)


def telemetry_blocks(rmap: RegisterMap, group: Group, max_registers: int, max_gap: int) -> list[Block]:
    points = [p for p in rmap.in_group(group) if p.kind is not Kind.ASCII]
    return group_blocks(points, max_registers=min(max_registers, rmap.max_read_registers), max_gap=max_gap)


class Poller:
    """Polls the telemetry blocks, updates the envelope's readings and publishes what it read.

    It knows nothing of the control side: whoever needs a reading at once subscribes to ``readings``.
    """

    def __init__(
        self,
        settings: BridgeSettings,
        rmap: RegisterMap,
        bus: Bus,
        readings: Readings,
        publisher: Publisher,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.rmap = rmap
        self.bus = bus
        self.readings = readings
        self.publisher = publisher
        self.metrics = metrics
        s = settings.serial
        self.fast = telemetry_blocks(rmap, Group.FAST, s.max_read_registers, s.max_gap_registers)
        self.slow = telemetry_blocks(rmap, Group.SLOW, s.max_read_registers, s.max_gap_registers)
        self._refresh = {"fast": asyncio.Event(), "slow": asyncio.Event()}
        self._faults: set[str] | None = None
        self.samples = 0

    @property
    def value_names(self) -> list[str]:
        names: list[str] = []
        for blocks in (self.fast, self.slow):
            regs = {a: 0 for b in blocks for a in range(b.start, b.end + 1)}
            names.extend(decode(self.rmap, 0, regs))
        return names

    def refresh(self) -> None:
        for ev in self._refresh.values():
            ev.set()

    async def poll_once(self, blocks: list[Block]) -> dict[int, int]:
        """Read every block (one job each, all queued at once); failed blocks are left out."""

        def job(b: Block) -> Callable[[RtuMaster], asyncio.Future[list[int]]]:
            async def run(master: RtuMaster) -> list[int]:
                return await master.read_holding(b.start, b.count, kind="poll")

            return run  # type: ignore[return-value]

        results = await asyncio.gather(
            *(self.bus.submit(Priority.POLL, job(b)) for b in blocks), return_exceptions=True
        )
        regs: dict[int, int] = {}
        for b, res in zip(blocks, results, strict=True):
            if isinstance(res, ModbusError):
                continue
            if isinstance(res, BaseException):
                raise res
            regs.update(zip(range(b.start, b.start + b.count), res, strict=True))
        return regs

    def publish(self, regs: dict[int, int]) -> Telemetry | None:
        values = decode(self.rmap, 0, regs)
        if not values:
            return None
        # each reading carries the time of this poll; a block that failed leaves its values out, so
        # they age (freshness.py) instead of being repeated
        self.readings.update(values)
        self._check_faults(regs)
        t = self.publisher.telemetry(values)
        self.samples += 1
        return t

    def _check_faults(self, regs: dict[int, int]) -> None:
        faults = decode_faults(self.rmap, 0, regs)
        if not faults:
            return
        active = {code for codes in faults.values() for code in codes}
        event = self.publisher.event
        if self._faults is not None:
            for code in sorted(active - self._faults):
                event(code, EventSeverity.CRITICAL, f"inverter fault {code} raised", state="raised")
            for code in sorted(self._faults - active):
                event(code, EventSeverity.INFO, f"inverter fault {code} cleared", state="cleared")
        elif active:
            event(
                "faults.active",
                EventSeverity.CRITICAL,
                "inverter faults active at start-up",
                codes=sorted(active),
            )
        self._faults = active

    async def run_group(self, name: str, blocks: list[Block], interval_s: float) -> None:
        ev = self._refresh[name]
        while True:
            start = time.monotonic()
            ev.clear()
            regs: dict[int, int] = {}
            try:
                regs = await self.poll_once(blocks)
                if regs:
                    self.publish(regs)
            except Exception:
                log.exception("telemetry %s poll failed", name)
                self.metrics.errors.labels("poll_bug").inc()
            wait = start + interval_s - time.monotonic()
            if not regs:  # device silent or port gone: do not spin
                wait = max(wait, 0.5)
            if wait > 0:
                await wait_event(ev, wait)
            else:
                await asyncio.sleep(0)

    async def run(self) -> None:
        t = self.settings.telemetry
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.run_group("fast", self.fast, t.fast_interval_s))
            if self.slow and t.slow_interval_s:
                tg.create_task(self.run_group("slow", self.slow, t.slow_interval_s))
