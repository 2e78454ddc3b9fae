"""Telemetry ingest: shared subscription -> validate -> line protocol -> batched InfluxDB writes -> PUBACK.

Nothing is acknowledged to the broker before it is stored (see services/device/README.md, "Ingest
durability"), so a SIGKILL or an InfluxDB outage costs redeliveries, never data. Invalid and unroutable
messages are counted, kept for inspection and acknowledged; they never stop the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import Counter
from pydantic import ValidationError

from nattery_contracts.aio import raise_if_cancelling
from nattery_contracts.mqtt import Telemetry
from nattery_device.devices.registry import DeviceEntry, RegistryCache
from nattery_device.ingest.dead_letters import RejectedStore, Rejection
from nattery_device.ingest.lines import telemetry_line_fast
from nattery_device.ingest.writer import InfluxBatchWriter
from nattery_device.mqtt.subscriber import AckingSubscriber, Delivery

log = logging.getLogger(__name__)

MESSAGES = Counter("nattery_device_ingest_messages_total", "Telemetry messages received", ["outcome"])

Sample = tuple[DeviceEntry, Telemetry]


class TelemetrySink(Protocol):
    """Where samples go besides InfluxDB (presence: latest values, last seen; live stream)."""

    async def record_telemetry(self, samples: Sequence[Sample], /) -> None: ...


class Sinks:
    """Several sinks as one (presence, per-site measured state), called in order."""

    def __init__(self, *sinks: TelemetrySink) -> None:
        self._sinks = sinks

    async def record_telemetry(self, samples: Sequence[Sample], /) -> None:
        for sink in self._sinks:
            await sink.record_telemetry(samples)


class TelemetryIngest:
    def __init__(
        self,
        subscriber: AckingSubscriber,
        registry: RegistryCache,
        writer: InfluxBatchWriter,
        rejected: RejectedStore,
        sink: TelemetrySink | None,
        *,
        batch_size: int = 5000,
    ) -> None:
        self._subscriber = subscriber
        self._registry = registry
        self._writer = writer
        self._rejected = rejected
        self._sink = sink
        self._batch_size = batch_size

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a client below may have swallowed our cancellation
            batch = await self._subscriber.next_batch(self._batch_size)
            try:
                await self.process(batch)
            except Exception:
                raise_if_cancelling()
                # Not acknowledged: the broker redelivers them after a reconnect. Keep consuming.
                log.exception("telemetry batch of %d failed; it will be redelivered", len(batch))

    async def process(self, batch: Sequence[Delivery]) -> None:
        lines: list[str] = []
        stored: list[Delivery] = []
        rejections: list[Rejection] = []
        rejected_deliveries: list[Delivery] = []
        samples: list[Sample] = []
        validate = Telemetry.model_validate_json
        for delivery in batch:
            parts = delivery.topic.split("/")
            entry = self._registry.device(parts[2], parts[3]) if len(parts) == 5 else None
            if entry is None and len(parts) == 5:
                entry = await self._registry.resolve(parts[2], parts[3])  # new site or device?
            if entry is None:
                rejections.append(self._unroutable(delivery, parts))
                rejected_deliveries.append(delivery)
                continue
            try:
                sample = validate(delivery.payload)
            except ValidationError as err:
                rejections.append(
                    Rejection(delivery.topic, "invalid_payload", _short(err), delivery.payload, entry.org_id)
                )
                rejected_deliveries.append(delivery)
                continue
            lines.append(telemetry_line_fast(entry.line_prefix, delivery.payload, sample))
            stored.append(delivery)
            samples.append((entry, sample))
        if rejections:
            MESSAGES.labels("rejected").inc(len(rejections))
            await self._rejected.keep(rejections)
            self._subscriber.ack(rejected_deliveries)
        if stored:
            MESSAGES.labels("accepted").inc(len(stored))
            if self._sink is not None:
                await self._sink.record_telemetry(samples)
            await self._writer.add(lines, stored)

    def _unroutable(self, delivery: Delivery, parts: list[str]) -> Rejection:
        if len(parts) != 5:
            return Rejection(delivery.topic, "invalid_topic", "topic outside the contract", delivery.payload)
        site = self._registry.site(parts[2])
        if site is None:
            return Rejection(
                delivery.topic, "unknown_site", f"no site with slug {parts[2]!r}", delivery.payload
            )
        return Rejection(
            delivery.topic,
            "unknown_device",
            f"site {parts[2]} has no device {parts[3]!r}",
            delivery.payload,
            site.org_id,
        )


def _short(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:5])
