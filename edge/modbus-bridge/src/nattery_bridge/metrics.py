"""Prometheus metrics of the bridge (own registry, served by ``prometheus_client``'s HTTP server)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bus_busy_seconds = Counter(
            "bridge_bus_busy_seconds", "Seconds the RS485 bus was occupied by transactions", registry=r
        )
        self.bus_busy_fraction = Gauge(
            "bridge_bus_busy_fraction", "Fraction of the last 60 s the bus was busy", registry=r
        )
        self.transaction_latency = Histogram(
            "bridge_transaction_latency_seconds",
            "Modbus transaction latency (request sent to reply parsed)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("bridge_errors", "Errors by type", ["type"], registry=r)
        self.queue_depth = Gauge(
            "bridge_queue_depth", "Bus jobs waiting, by priority", ["priority"], registry=r
        )
        self.outbox_rows = Gauge("bridge_outbox_rows", "Rows waiting in the outbox", registry=r)
        self.outbox_bytes = Gauge("bridge_outbox_bytes", "Bytes waiting in the outbox", registry=r)
        self.outbox_dropped = Counter(
            "bridge_outbox_dropped_rows", "Outbox rows dropped to stay in the disk budget", registry=r
        )
        self.published = Counter(
            "bridge_published_messages", "Messages PUBACKed by the broker", ["kind"], registry=r
        )
        self.command_latency = Histogram(
            "bridge_command_latency_seconds",
            "Command received to done/failed",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commands = Counter("bridge_commands", "Commands by final status", ["status"], registry=r)
        self.register_writes = Counter("bridge_register_writes", "Holding registers written", registry=r)
        self.write_skipped = Counter(
            "bridge_register_writes_skipped", "Writes skipped because the value was already set", registry=r
        )
        self.failsafe = Counter(
            "bridge_failsafe_activations", "Fail-safe activations", ["reason"], registry=r
        )
        self.pacing = Gauge(
            "bridge_pacing_seconds", "Learned silence after a reply before the next request", registry=r
        )
        self.pacing_backoffs = Counter(
            "bridge_pacing_backoffs", "Pacing backed off after a lost or garbled reply", registry=r
        )
        self.register_mismatches = Counter(
            "bridge_register_mismatches",
            "Control registers found different from what the bridge wrote (readback: right after the "
            "write; drift: changed later behind its back); each is re-applied",
            ["kind"],
            registry=r,
        )
        self.temperature_hold = Gauge(
            "bridge_temperature_hold", "1 while the battery holds because of its temperature", registry=r
        )
        self.readings_stale = Gauge(
            "bridge_readings_stale", "1 while the envelope's readings are stale or missing", registry=r
        )
        self.lifetime_clamped = Counter(
            "bridge_control_lifetime_clamped",
            "Controls whose validity was clamped to the maximum",
            registry=r,
        )
        self.mqtt_connected = Gauge("bridge_mqtt_connected", "1 while connected to the broker", registry=r)
        self.device_online = Gauge("bridge_device_online", "1 while the inverter answers", registry=r)
        self._busy: deque[tuple[float, float]] = deque()
        self._busy_sum = 0.0

    def bus_busy(self, start: float, end: float) -> None:
        """Account one transaction; the fraction covers transactions that ended in the last 60 s."""
        self.bus_busy_seconds.inc(end - start)
        self._busy.append((start, end))
        self._busy_sum += end - start
        horizon = end - 60.0
        while self._busy and self._busy[0][1] < horizon:
            s, e = self._busy.popleft()
            self._busy_sum -= e - s
        self.bus_busy_fraction.set(min(1.0, max(0.0, self._busy_sum) / 60.0))

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)


def monotonic() -> float:
    return time.monotonic()
