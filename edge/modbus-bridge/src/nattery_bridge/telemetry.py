"""Telemetry polling: blocks from ``group_blocks``, one transaction per bus job, decoded from the map."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

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
from nattery_contracts.mqtt import EventSeverity, Telemetry, TopicSuffix, topic

from .bus import Bus, Priority
from .controller import Controller
from .metrics import Metrics
from .rtu import ModbusError, RtuMaster
from .settings import BridgeSettings
from .store import Store

log = logging.getLogger(__name__)


def telemetry_blocks(rmap: RegisterMap, group: Group, max_registers: int, max_gap: int) -> list[Block]:
    points = [p for p in rmap.in_group(group) if p.kind is not Kind.ASCII]
    return group_blocks(points, max_registers=min(max_registers, rmap.max_read_registers), max_gap=max_gap)


class Poller:
    def __init__(
        self,
        settings: BridgeSettings,
        rmap: RegisterMap,
        bus: Bus,
        store: Store,
        metrics: Metrics,
        controller: Controller,
        wake_outbox: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.rmap = rmap
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.controller = controller
        self.wake_outbox = wake_outbox
        s = settings.serial
        self.fast = telemetry_blocks(rmap, Group.FAST, s.max_read_registers, s.max_gap_registers)
        self.slow = telemetry_blocks(rmap, Group.SLOW, s.max_read_registers, s.max_gap_registers)
        self.topic = topic(settings.site, settings.device, TopicSuffix.TELEMETRY)
        self._refresh = {"fast": asyncio.Event(), "slow": asyncio.Event()}
        self._faults: set[str] | None = None
        self._last_drop_event = 0.0
        self._dropped_since_event = 0
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
        self._update_live(values)
        self._check_faults(regs)
        seq = self.store.next_seq()
        t = Telemetry(ts=datetime.now(UTC), seq=seq, values=values)
        dropped = self.store.enqueue_telemetry(self.topic, seq, t.model_dump_json().encode())
        if dropped:
            self._on_dropped(dropped.rows, dropped.bytes)
        self.samples += 1
        self.wake_outbox()
        return t

    def _update_live(self, v: dict[str, float]) -> None:
        # each reading carries the time of this poll; a block that failed leaves its values out, so
        # they age (freshness.py) instead of being repeated
        self.controller.observe_readings(v)

    def _check_faults(self, regs: dict[int, int]) -> None:
        faults = decode_faults(self.rmap, 0, regs)
        if not faults:
            return
        active = {code for codes in faults.values() for code in codes}
        if self._faults is not None:
            for code in sorted(active - self._faults):
                self.controller.publish_event(
                    code, EventSeverity.CRITICAL, f"inverter fault {code} raised", state="raised"
                )
            for code in sorted(self._faults - active):
                self.controller.publish_event(
                    code, EventSeverity.INFO, f"inverter fault {code} cleared", state="cleared"
                )
        elif active:
            self.controller.publish_event(
                "faults.active",
                EventSeverity.CRITICAL,
                "inverter faults active at start-up",
                codes=sorted(active),
            )
        self._faults = active

    def _on_dropped(self, rows: int, nbytes: int) -> None:
        self.metrics.outbox_dropped.inc(rows)
        self._dropped_since_event += rows
        now = time.monotonic()
        if now - self._last_drop_event >= 60.0:
            self.controller.publish_event(
                "outbox.dropped",
                EventSeverity.WARNING,
                f"outbox over its disk budget: dropped {self._dropped_since_event} oldest telemetry rows",
                rows=self._dropped_since_event,
                budget_bytes=self.store.budget_bytes,
            )
            self._dropped_since_event = 0
            self._last_drop_event = now

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
