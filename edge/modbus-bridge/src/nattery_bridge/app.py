"""Wiring: serial master, bus worker, poller, controller, MQTT link, metrics, watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from nattery_contracts.modbus.registers import load_profile
from nattery_contracts.mqtt import DeviceStatus, EventSeverity

from .bus import Bus
from .control import DeyeStrategy
from .controller import Controller
from .discovery import discovery_messages
from .metrics import Metrics
from .mqtt_link import MqttLink
from .rtu import ModbusError, PortUnavailable, RtuMaster, Timing, bits_per_char
from .settings import BridgeSettings
from .store import Store
from .telemetry import Poller

log = logging.getLogger("nattery_bridge")

WATCHDOG_EXIT_CODE = 70


def _return_free_heap() -> None:
    """Give the heap that start-up freed (pydantic's schema building, the register map's YAML) back to
    the OS: about 6 MB of RSS on a Pi that runs for months. glibc only; elsewhere nothing happens."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name).malloc_trim(0)


class Watchdog:
    """A thread that ends the process when the bus worker or the event loop stops making progress.

    The worker heartbeats at least once a second even when idle, and a transaction is bounded by its
    timeout, so a heartbeat older than ``timeout_s`` means something is stuck: exit non-zero and let
    Balena's supervisor (``restart: always``) start a fresh container.
    """

    def __init__(self, heartbeat: Callable[[], float], timeout_s: float) -> None:
        self._heartbeat = heartbeat
        self.timeout_s = timeout_s
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            age = time.monotonic() - self._heartbeat()
            if age > self.timeout_s:
                sys.stderr.write(f"watchdog: bus worker silent for {age:.0f} s, exiting\n")
                sys.stderr.flush()
                os._exit(WATCHDOG_EXIT_CODE)


PORT_UNAVAILABLE = PortUnavailable.kind


class PortCountingMaster(RtuMaster):
    """The serial master as the bus uses it, counting every transaction the missing port refused.

    The master's observer hears only of transactions that reached the wire: a USB adapter pulled between
    two transactions, and every failed reopen after it, never did, so an unplug often went uncounted.
    Counted here instead, once per refused transaction, whichever path refused it.
    """

    def __init__(self, *args: Any, on_port_unavailable: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_port_unavailable = on_port_unavailable

    async def read_holding(self, address: int, count: int, kind: str = "poll") -> list[int]:
        try:
            return await super().read_holding(address, count, kind)
        except ModbusError as e:
            self._refused(e)
            raise

    async def write_registers(self, address: int, values: list[int], kind: str = "write") -> None:
        try:
            await super().write_registers(address, values, kind)
        except ModbusError as e:
            self._refused(e)
            raise

    def _refused(self, e: ModbusError) -> None:
        if e.kind == PORT_UNAVAILABLE:
            self._on_port_unavailable()


class Bridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        s = settings
        self.metrics = Metrics()
        self._backoffs_seen = 0
        self.rmap = load_profile(s.profile)
        self.store = Store(s.db_path, s.outbox_budget_bytes)
        timing = Timing(
            baud=s.serial.baudrate,
            bits_per_char=bits_per_char(s.serial.bytesize, s.serial.parity, s.serial.stopbits),
            turnaround_s=s.serial.turnaround_ms / 1000,
            margin_s=s.serial.timeout_margin_ms / 1000,
            pacing_s=None if s.serial.pacing_ms is None else s.serial.pacing_ms / 1000,
            pacing_max_s=s.serial.pacing_max_ms / 1000,
            pacing_memory_s=s.serial.pacing_memory_s,
            chunk_gap_s=s.serial.chunk_gap_ms / 1000,
        )
        self.master = PortCountingMaster(
            s.serial.port,
            s.serial.unit,
            timing,
            bytesize=s.serial.bytesize,
            parity=s.serial.parity,
            stopbits=s.serial.stopbits,
            retries=s.serial.retries,
            reopen_interval_s=s.serial.reopen_interval_s,
            observer=self._observe,
            on_port_unavailable=self.metrics.errors.labels(PORT_UNAVAILABLE).inc,
        )
        self.bus = Bus(
            self.master,
            self.metrics,
            stale_after_s=s.serial.stale_after_s,
            stale_probe_interval_s=s.serial.stale_probe_interval_s,
            on_device_state=self._device_state,
        )
        self.strategy = DeyeStrategy(self.rmap, nominal_voltage_v=s.nominal_battery_voltage_v)
        self.link: MqttLink | None = None
        self.controller = Controller(
            s,
            self.store,
            self.bus,
            self.rmap,
            self.strategy,
            self.metrics,
            link_down_for=self._link_down_for,
            request_refresh=self._refresh,
        )
        self.publisher = self.controller.publisher
        self.poller = Poller(s, self.rmap, self.bus, self.controller.readings, self.publisher, self.metrics)
        discovery = discovery_messages(s, self.rmap, self.poller.value_names) if s.discovery.enabled else []
        self.link = MqttLink(
            s, self.controller.outbox, self.metrics, self.controller.handle_command, discovery
        )
        self.watchdog = Watchdog(lambda: self.bus.heartbeat, s.watchdog_timeout_s)

    # ------------------------------------------------------------ callbacks
    def _observe(self, kind: str, start: float, end: float, ok: bool, err: str | None) -> None:
        self.metrics.bus_busy(start, end)
        pacer = self.master.pacer()
        self.metrics.pacing.set(pacer.pacing_s)
        if pacer.backoffs > self._backoffs_seen:
            self.metrics.pacing_backoffs.inc(pacer.backoffs - self._backoffs_seen)
            self._backoffs_seen = pacer.backoffs
        self.metrics.transaction_latency.labels(kind).observe(end - start)
        if err and err != PORT_UNAVAILABLE:  # counted by PortCountingMaster, which sees every one
            self.metrics.errors.labels(err).inc()

    def _link_down_for(self) -> float:
        assert self.link is not None
        since = self.link.disconnected_since
        return 0.0 if since is None else time.monotonic() - since

    def _refresh(self) -> None:
        self.poller.refresh()

    def _device_state(self, online: bool) -> None:
        assert self.link is not None
        status = DeviceStatus.ONLINE if online else DeviceStatus.DEGRADED
        task = asyncio.get_running_loop().create_task(self.link.set_status(status))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        self.publisher.event(
            "device.online" if online else "device.stale",
            EventSeverity.INFO if online else EventSeverity.WARNING,
            "inverter answers again" if online else "inverter not answering; polls back off",
        )

    # ------------------------------------------------------------ run
    async def run(self) -> None:
        assert self.link is not None
        self._bg: set[asyncio.Task[None]] = set()
        try:
            self.metrics.serve(self.settings.metrics_port)
        except OSError as e:  # metrics are not worth failing the bridge for
            log.error("metrics endpoint on port %s unavailable: %s", self.settings.metrics_port, e)
        self.metrics.device_online.set(1)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR1, self._signal_estop)
        self.watchdog.start()
        # Everything built so far lives as long as the process: keep it out of the cyclic GC's scans.
        gc.collect()
        gc.freeze()
        _return_free_heap()
        self.store.prune_commands(self.settings.seen_commands_keep_days * 86400)
        try:
            self.master.open()
        except Exception as e:
            log.warning("serial port not available yet: %s", e)
        log.info(
            "bridge %s/%s: %d fast blocks %s, %d slow blocks %s",
            self.settings.site,
            self.settings.device,
            len(self.poller.fast),
            [(b.start, b.count) for b in self.poller.fast],
            len(self.poller.slow),
            [(b.start, b.count) for b in self.poller.slow],
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.bus.run())
                tg.create_task(self.link.run())
                tg.create_task(self.controller.run())
                tg.create_task(self.poller.run())
        finally:
            self.watchdog.stop()
            self.master.close()
            self.store.close()

    def _signal_estop(self) -> None:
        task = asyncio.get_running_loop().create_task(self.controller.local_emergency_stop("SIGUSR1"))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
