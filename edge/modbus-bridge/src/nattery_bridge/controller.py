"""The bridge's control side, wired: one object that owns the parts and hands them to each other.

Each job lives in its own module:

* ``command_parse.py`` / ``commands.py``: a command's payload, then a handler per command type;
* ``active_control.py``: the persisted active control; ``failsafe.py``: what runs now, and the fail-safe;
* ``inverter_writer.py``: writing programs; ``drift.py``: checking they stayed written;
* ``limits.py``: the hard and the persisted operating limits;
* ``publisher.py``: every outbound message; ``outbox.py``: their accounting.

The poller feeds :attr:`Controller.readings` and publishes through :attr:`Controller.publisher`; the MQTT
link drains :attr:`Controller.outbox` and hands commands to :meth:`Controller.handle_command`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from nattery_contracts.modbus.registers import RegisterMap

from .active_control import Active, ActiveControl
from .bus import Bus
from .commands import CommandProcessor
from .control import ControlStrategy
from .drift import DriftCheck
from .failsafe import Supervisor
from .freshness import Readings
from .inverter_writer import InverterWriter
from .limits import SiteLimits
from .metrics import Metrics
from .outbox import Outbox
from .publisher import Publisher
from .settings import BridgeSettings
from .store import Store
from .temperature_guard import TemperatureGuard


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        request_refresh: Callable[[], None],
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        s = settings
        self.outbox = Outbox(store, metrics, monotonic=monotonic)
        self.publisher = Publisher(s.site, s.device, self.outbox, clock)
        self.readings = Readings(s.readings_max_age_s, monotonic)
        self.guard = TemperatureGuard(s.temperature_hysteresis_c, s.temperature_release_after_s, monotonic)
        self.limits = SiteLimits(s.limits.safety(), store)
        self.control = ActiveControl(s, store, clock)
        self.writer = InverterWriter(
            bus,
            rmap,
            strategy,
            max_read_registers=s.serial.max_read_registers,
            control=self.control,
            limits=self.limits,
            readings=self.readings,
            publisher=self.publisher,
            metrics=metrics,
            monotonic=monotonic,
        )
        drift = DriftCheck(
            bus,
            rmap,
            self.writer,
            interval_s=s.drift_check_interval_s,
            max_read_registers=s.serial.max_read_registers,
            publisher=self.publisher,
            metrics=metrics,
            monotonic=monotonic,
        )
        self.supervisor = Supervisor(
            control=self.control,
            writer=self.writer,
            drift=drift,
            readings=self.readings,
            guard=self.guard,
            limits=self.limits,
            publisher=self.publisher,
            metrics=metrics,
            link_grace_s=s.link_grace_s,
            interval_s=s.control_check_interval_s,
            link_down_for=link_down_for,
            clock=clock,
        )
        self.commands = CommandProcessor(
            settings=s,
            store=store,
            publisher=self.publisher,
            control=self.control,
            writer=self.writer,
            supervisor=self.supervisor,
            limits=self.limits,
            readings=self.readings,
            guard=self.guard,
            metrics=metrics,
            request_refresh=request_refresh,
            clock=clock,
        )
        self.handle_command = self.commands.handle
        self.tick = self.supervisor.tick
        self.run = self.supervisor.run
        self.local_emergency_stop = self.supervisor.local_emergency_stop

    @property
    def active(self) -> Active | None:
        return self.control.active
