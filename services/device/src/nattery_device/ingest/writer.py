"""Batched InfluxDB writes that never give up on a batch and acknowledge MQTT only once it is stored.

Flush when ``batch_size`` lines are pending or ``flush_interval_s`` after the first pending line; at
most ``max_concurrent`` writes in flight, after which :meth:`add` waits (back-pressure into the MQTT
receive buffer, which the broker bounds with Receive Maximum). A batch InfluxDB cannot take right now
(down, 5xx, timeout) is retried with exponential back-off for as long as it takes; a batch InfluxDB
refuses (4xx: e.g. a field type conflict) is kept in the rejected list and acknowledged, because
retrying cannot help and holding it would block the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import httpx
from prometheus_client import Counter, Gauge, Histogram

from nattery_device.mqtt.subscriber import Delivery
from nattery_device.telemetry.repository import reroll
from nattery_device.telemetry.rollup import LATE_S, late_ranges
from nattery_shared.influx import InfluxClient, InfluxError, InfluxUnavailable
from nattery_shared.retry import Backoff, FailureLog, retry_until_ok

log = logging.getLogger(__name__)

POINTS_WRITTEN = Counter("nattery_device_ingest_points_written_total", "Telemetry points written to InfluxDB")
WRITE_RETRIES = Counter("nattery_device_ingest_write_retries_total", "InfluxDB batch writes retried")
WRITE_REFUSED = Counter(
    "nattery_device_ingest_write_refused_total", "Points in batches InfluxDB refused (4xx)"
)
PENDING = Gauge("nattery_device_ingest_pending_points", "Points received and not yet written")
WRITE_SECONDS = Histogram(
    "nattery_device_ingest_write_seconds",
    "InfluxDB batch write time",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

ROLLUP_REROLLS = Counter(
    "nattery_device_history_rollup_rerolls_total",
    "Devices' minute ranges recomputed in the one-minute history rollup because points arrived late",
)

OnWritten = Callable[[Sequence[Delivery]], object]
OnRefused = Callable[[Sequence[str], str], None]


class InfluxBatchWriter:
    def __init__(
        self,
        influx: InfluxClient,
        *,
        on_written: OnWritten,
        on_refused: OnRefused | None = None,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_concurrent: int = 2,
        retry_max_delay_s: float = 10.0,
    ) -> None:
        self._influx = influx
        self._on_written = on_written
        self._on_refused = on_refused
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_max_delay_s = retry_max_delay_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self._lines: list[str] = []
        self._deliveries: list[Delivery] = []
        self._first_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._wake = asyncio.Event()
        # InfluxDB down: logged once when writes start failing and once when they work again.
        self._failures = FailureLog("influxdb writes", log)
        self._backoff = Backoff(initial_s=min(0.2, retry_max_delay_s), max_s=retry_max_delay_s)
        self._reroll: dict[tuple[str, str], tuple[int, int]] = {}

    @property
    def pending(self) -> int:
        return self._pending

    async def add(self, lines: Sequence[str], deliveries: Sequence[Delivery]) -> None:
        """Queue lines with the deliveries they came from; waits while every write slot is busy."""
        if not deliveries:
            return
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._wake.set()
        self._lines.extend(lines)
        self._deliveries.extend(deliveries)
        self._pending += len(lines)
        PENDING.set(self._pending)
        if len(self._lines) >= self._batch_size:
            await self._flush()

    async def _flush(self) -> None:
        if not self._deliveries:
            return
        await self._slots.acquire()  # back-pressure: at most max_concurrent batches in flight
        if not self._deliveries:  # a concurrent flush took them while we waited
            self._slots.release()
            return
        lines, deliveries = self._lines, self._deliveries
        self._lines, self._deliveries, self._first_at = [], [], None
        task = asyncio.create_task(self._write(lines, deliveries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, lines: list[str], deliveries: list[Delivery]) -> None:
        async def write_once() -> None:
            started = time.perf_counter()
            try:
                if lines:
                    await self._influx.write_lines(lines, retry_for_s=0)
            except InfluxUnavailable:
                WRITE_RETRIES.inc()
                raise
            WRITE_SECONDS.observe(time.perf_counter() - started)

        try:
            try:
                # Held (and its MQTT messages unacknowledged) for as long as InfluxDB is unavailable.
                await retry_until_ok(
                    write_once,
                    name="influxdb writes",
                    backoff=self._backoff,
                    retry_on=InfluxUnavailable,
                    failures=self._failures,
                )
            except InfluxError as err:
                WRITE_REFUSED.inc(len(lines))
                log.error("influxdb refused a batch of %d points: %s", len(lines), err)
                if self._on_refused is not None:
                    self._on_refused(lines, str(err))
            else:
                POINTS_WRITTEN.inc(len(lines))
                await self._reroll_late(lines)
            self._on_written(deliveries)
        finally:
            self._pending -= len(lines)
            PENDING.set(self._pending)
            self._slots.release()

    async def run(self) -> None:
        """Time-based flushes."""
        while True:
            if self._first_at is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            remaining = self._first_at + self._flush_interval_s - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            await self._flush()

    async def _reroll_late(self, lines: list[str]) -> None:
        """Late points' minutes recomputed in the one-minute rollup (telemetry/rollup.py) before the
        batch is acknowledged; minutes that could not be are retried after the next batch."""
        before_ns = time.time_ns() - int(LATE_S * 1e9)
        for key, (lo, hi) in late_ranges(lines, before_ns).items():
            old = self._reroll.get(key)
            self._reroll[key] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
        for (measurement, device), (lo, hi) in list(self._reroll.items()):
            try:
                await reroll(self._influx, measurement, device, lo, hi)
            except (InfluxError, InfluxUnavailable, httpx.HTTPError) as err:
                log.warning(
                    "history rollup of late points not recomputed yet (%s %s): %s", measurement, device, err
                )
                return
            except ValueError as err:  # not a device tag we can quote: nothing to recompute
                log.warning("history rollup of late points skipped: %s", err)
            ROLLUP_REROLLS.inc()
            # pop, not del: the other write in flight may have re-rolled (and removed) it meanwhile; a
            # KeyError here left the batch unacknowledged (redelivered) and its task's error unread.
            self._reroll.pop((measurement, device), None)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending and wait for in-flight writes (clean shutdown)."""
        await self._flush()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
