"""The bridge's controller, bus and poller in-process against the simulator's device, on a fake clock.

No pty and no wall time: :class:`LoopbackMaster` speaks the bridge's ``RtuMaster`` interface, builds the
real request frames (pymodbus' PDUs and RTU framer, as the bridge does), hands them to the simulator's
``RtuSlave.reply_for`` (the same code that answers on the serial port, fault injection included, only
without the wire timing) and decodes the real reply frames. The registers every test checks are the
simulator's (``DeyeInverter.regs``) and its physics (``battery_power_w``, ``grid_w``) moves only when
the test advances the fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, WriteMultipleRegistersRequest

from nattery_bridge.bus import Bus
from nattery_bridge.control import DeyeStrategy
from nattery_bridge.controller import Controller
from nattery_bridge.metrics import Metrics
from nattery_bridge.rtu import BadFrame, ExceptionReply, NoResponse, UnexpectedReply, framer
from nattery_bridge.settings import BridgeSettings
from nattery_bridge.store import Store
from nattery_bridge.telemetry import Poller
from nattery_contracts.modbus import load_profile
from nattery_sim.devices import BatteryConfig, DeyeInverter
from nattery_sim.faults import FaultConfig
from nattery_sim.profiles import SiteProfile
from nattery_sim.server import RtuSlave, SimClock

RMAP = load_profile("deye-sunsynk-1ph")
NIGHT = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)  # no PV: the battery does exactly what the controls say


@dataclass
class FakeClock:
    """Monotonic seconds ``t`` and the wall clock ``start + t``."""

    start: datetime = NIGHT
    t: float = 1000.0

    def mono(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)


class LoopbackMaster:
    """``RtuMaster``'s transaction interface over the simulator's frame handler, without a wire."""

    def __init__(self, slave: RtuSlave, clock: FakeClock) -> None:
        self.slave = slave
        self.unit = slave.unit
        self.clock = clock
        self.last_tx_start = 0.0
        self.last_tx_end = 0.0
        self.last_success = 0.0
        self.transactions = 0
        self._framer = framer()

    async def _transact(self, request: ModbusPDU) -> ModbusPDU:
        self.transactions += 1
        self.last_tx_start = self.last_tx_end = self.clock.mono()
        raw = await self.slave.reply_for(self._framer.buildFrame(request))
        if raw is None:
            raise NoResponse("no reply (simulated silence)")
        try:
            used, resp = self._framer.handleFrame(raw, 0, 0)
        except ModbusIOException as e:
            raise BadFrame(str(e)) from e
        if not used or resp is None:
            raise BadFrame(f"bad CRC in reply {raw.hex()}")
        function = request.function_code
        if resp.dev_id != self.unit or resp.function_code & 0x7F != function:
            raise UnexpectedReply(f"reply from unit {resp.dev_id} FC{resp.function_code:02}")
        if isinstance(resp, ExceptionResponse):
            raise ExceptionReply(function, resp.exception_code)
        self.last_success = self.clock.mono()
        return resp

    async def read_holding(self, address: int, count: int, kind: str = "poll") -> list[int]:
        resp = await self._transact(
            ReadHoldingRegistersRequest(address=address, count=count, dev_id=self.unit)
        )
        return list(resp.registers)

    async def write_registers(self, address: int, values: list[int], kind: str = "write") -> None:
        request = WriteMultipleRegistersRequest(address=address, registers=values, dev_id=self.unit)
        resp = await self._transact(request)
        if resp.address != address or resp.count != len(values):
            raise UnexpectedReply("FC16 echo differs")


@dataclass
class Site:
    """One simulated site: device + slave (faults), the bridge's controller/bus/poller, a fake clock."""

    settings: BridgeSettings
    clock: FakeClock
    device: DeyeInverter
    slave: RtuSlave
    controller: Controller
    poller: Poller
    store: Store
    metrics: Metrics
    link_down_since: float | None = None
    acks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def faults(self) -> FaultConfig:
        return self.slave.faults

    def link_down_for(self) -> float:
        return 0.0 if self.link_down_since is None else self.clock.mono() - self.link_down_since

    def physics(self, dt_s: float) -> None:
        self.device.tick(self.clock.now(), dt_s)

    async def poll(self) -> bool:
        regs = await self.poller.poll_once(self.poller.fast)
        if regs:
            self.poller.publish(regs)
        return bool(regs)

    async def period(self, dt_s: float | None = None, *, poll: bool = True) -> None:
        """One control period: time passes (physics), a fast poll, a control tick, physics re-decides."""
        dt = self.settings.control_check_interval_s if dt_s is None else dt_s
        self.clock.t += dt
        self.physics(dt)
        if poll:
            await self.poll()
        await self.controller.tick()
        self.physics(0.0)  # the inverter reacts to what was just written

    def control(self) -> dict[str, float]:
        return self.device.control()

    def events(self, code: str) -> list[dict[str, Any]]:
        import json

        out = []
        for row in self.store.peek(100000):
            if row.kind == "event":
                ev = json.loads(row.payload)
                if ev["code"] == code:
                    out.append(ev)
        return out

    def ack_rows(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(r.payload) for r in self.store.peek(100000) if r.kind == "ack"]


@contextlib.asynccontextmanager
async def site(
    tmp: Path,
    *,
    period_s: float = 5.0,
    battery: BatteryConfig | None = None,
    **overrides: Any,
) -> AsyncIterator[Site]:
    settings = BridgeSettings(
        data_dir=tmp,
        control_check_interval_s=period_s,
        telemetry={"fast_interval_s": period_s, "slow_interval_s": 0},
        drift_check_interval_s=overrides.pop("drift_check_interval_s", 60.0),
        link_grace_s=overrides.pop("link_grace_s", 60.0),
        readings_max_age_s=overrides.pop("readings_max_age_s", 3 * period_s),
        temperature_release_after_s=overrides.pop("temperature_release_after_s", 6 * period_s),
        metrics_port=0,
        **overrides,
    )
    clock = FakeClock()
    device = DeyeInverter(
        RMAP,
        battery or BatteryConfig(max_power_w=8000.0, start_soc_pct=50.0),
        SiteProfile(pv_kwp=0.0, load_scale=1.0),
    )
    device.tick(clock.now(), 0.0)
    slave = RtuSlave(device, "loopback", faults=FaultConfig(seed=1), clock=SimClock(clock.now(), 0.0))
    master = LoopbackMaster(slave, clock)
    metrics = Metrics()
    store = Store(settings.db_path, settings.outbox_budget_bytes)
    bus = Bus(master, metrics, stale_after_s=1e9)  # type: ignore[arg-type]
    holder: dict[str, Site] = {}
    ctrl = Controller(
        settings,
        store,
        bus,
        RMAP,
        DeyeStrategy(RMAP, nominal_voltage_v=settings.nominal_battery_voltage_v),
        metrics,
        link_down_for=lambda: holder["site"].link_down_for(),
        request_refresh=lambda: None,
        clock=clock.now,
        monotonic=clock.mono,
    )
    poller = Poller(settings, RMAP, bus, ctrl.readings, ctrl.publisher, metrics)
    s = Site(settings, clock, device, slave, ctrl, poller, store, metrics)
    holder["site"] = s
    worker = asyncio.create_task(bus.run())
    try:
        yield s
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        store.close()


def command(
    clock: FakeClock, ctype: str, params: dict[str, Any] | None = None, *, expires_in_s: float = 600.0
) -> bytes:
    import json
    import uuid

    now = clock.now()
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": ctype,
            "params": params or {},
            "issued_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(),
        }
    ).encode()
