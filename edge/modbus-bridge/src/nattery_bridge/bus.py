"""One bus, one queue: every Modbus transaction runs in this single worker, by priority.

A job is a coroutine function that receives the :class:`RtuMaster` and may run several transactions
(a command's read, write and read-back run back to back so no poll slips between them). A telemetry poll
is one transaction per job, so a command waits at most for the one transaction on the wire.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from nattery_contracts.aio import wait_event

from .metrics import Metrics
from .rtu import ModbusError, RtuMaster

log = logging.getLogger(__name__)
T = TypeVar("T")


class Priority(IntEnum):
    EMERGENCY = 0
    COMMAND = 1
    POLL = 2


class DeviceStale(ModbusError):
    kind = "device_stale"


Job = Callable[[RtuMaster], Awaitable[Any]]


@dataclass(order=True)
class _Item:
    priority: int
    order: int
    job: Job = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    probe_ok: bool = field(compare=False, default=False)


class Bus:
    def __init__(
        self,
        master: RtuMaster,
        metrics: Metrics,
        *,
        stale_after_s: float = 30.0,
        stale_probe_interval_s: float = 30.0,
        on_device_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.master = master
        self.metrics = metrics
        self.stale_after_s = stale_after_s
        self.stale_probe_interval_s = stale_probe_interval_s
        self._heap: list[_Item] = []
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self.heartbeat = time.monotonic()
        self.device_online = True
        self._first_failure: float | None = None
        self._last_probe = 0.0
        self._on_device_state = on_device_state
        self.current: Priority | None = None
        self._depth = dict.fromkeys(Priority, 0)
        self._depth_gauges = {p: metrics.queue_depth.labels(p.name.lower()) for p in Priority}

    def depth(self, priority: Priority) -> int:
        return self._depth[priority]

    def _update_depth(self, priority: Priority, delta: int) -> None:
        self._depth[priority] += delta
        self._depth_gauges[priority].set(self._depth[priority])

    async def submit(self, priority: Priority, job: Callable[[RtuMaster], Awaitable[T]]) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Item(int(priority), next(self._counter), job, fut))
        self._update_depth(priority, +1)
        self._wake.set()
        return await fut

    async def run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            if not self._heap:
                self._wake.clear()
                await wait_event(self._wake, 1.0)
                continue
            item = heapq.heappop(self._heap)
            self._update_depth(Priority(item.priority), -1)
            if item.future.done():  # cancelled by its submitter
                continue
            prio = Priority(item.priority)
            if prio is Priority.POLL and not self.device_online:
                now = time.monotonic()
                if now - self._last_probe < self.stale_probe_interval_s:
                    item.future.set_exception(DeviceStale("device not answering; skipping polls"))
                    continue
                self._last_probe = now  # this poll is the re-probe
            self.current = prio
            try:
                result = await item.job(self.master)
            except ModbusError as e:
                self._failure()
                if not item.future.done():
                    item.future.set_exception(e)
            except Exception as e:  # a bug in a job must not kill the bus
                log.exception("bus job failed")
                self.metrics.errors.labels("job_bug").inc()
                if not item.future.done():
                    item.future.set_exception(e)
            else:
                self._success()
                if not item.future.done():
                    item.future.set_result(result)
            finally:
                self.current = None

    def _success(self) -> None:
        self._first_failure = None
        if not self.device_online:
            log.info("device answers again")
            self.device_online = True
            self.metrics.device_online.set(1)
            if self._on_device_state:
                self._on_device_state(True)

    def _failure(self) -> None:
        now = time.monotonic()
        if self._first_failure is None:
            self._first_failure = now
        if self.device_online and now - self._first_failure >= self.stale_after_s:
            log.warning("device stale: no good reply for %.0f s; polls back off", now - self._first_failure)
            self.device_online = False
            self._last_probe = now
            self.metrics.device_online.set(0)
            if self._on_device_state:
                self._on_device_state(False)
