"""Gateway readings into the MQTT telemetry pipeline: the same sinks (presence and last seen, latest
values, live stream, per-site state, and whatever is added to them) and the same batched InfluxDB writer
(its batching, retries, late-point rollup), not a second writer.

The writer acknowledges what it stored by calling back with the MQTT deliveries it was handed. A gateway
batch rides along as one marker delivery (generation -1, message id 0: the MQTT acknowledgement skips it)
whose callback wakes the HTTP request, so ``POST /ingest`` answers only once its points are in InfluxDB.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

from nattery_device.ingest.telemetry import Sample, TelemetrySink
from nattery_device.ingest.writer import InfluxBatchWriter
from nattery_device.mqtt.subscriber import Delivery
from nattery_shared.errors import DependencyUnavailable

FEED_GENERATION = -1  # never an MQTT connection's generation (those count up from 0)
_TOPIC_PREFIX = "gateway-ingest/"


class GatewayFeed:
    def __init__(self, *, stored_timeout_s: float = 10.0) -> None:
        self._writer: InfluxBatchWriter | None = None
        self._sink: TelemetrySink | None = None
        self._stored_timeout_s = stored_timeout_s
        self._waiting: dict[str, asyncio.Future[None]] = {}

    def acking(self, ack: Callable[[Sequence[Delivery]], object]) -> Callable[[Sequence[Delivery]], None]:
        """The writer's ``on_written``: wakes gateway requests, hands every delivery on to ``ack``."""

        def on_written(deliveries: Sequence[Delivery]) -> None:
            if self._waiting:
                for delivery in deliveries:
                    if delivery.generation == FEED_GENERATION:
                        waiter = self._waiting.pop(delivery.topic, None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
            ack(deliveries)

        return on_written

    def attach(self, writer: InfluxBatchWriter, sink: TelemetrySink | None) -> None:
        self._writer, self._sink = writer, sink

    async def submit(self, samples: Sequence[Sample], lines: Sequence[str]) -> None:
        """Record the samples like MQTT telemetry and return once InfluxDB has their points.

        Raises :class:`DependencyUnavailable` when ingest is off here or the points are not stored
        within the timeout (InfluxDB down): they stay queued in the writer, and the gateway's retry of
        the batch overwrites the same points.
        """
        writer = self._writer
        if writer is None:
            raise DependencyUnavailable("telemetry ingest is not enabled on this instance")
        marker = Delivery(FEED_GENERATION, 0, f"{_TOPIC_PREFIX}{uuid.uuid4().hex}", b"")
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[marker.topic] = stored
        try:
            if self._sink is not None:
                await self._sink.record_telemetry(samples)
            await writer.add(lines, [marker])
            try:
                await asyncio.wait_for(asyncio.shield(stored), self._stored_timeout_s)
            except TimeoutError as err:
                raise DependencyUnavailable("influxdb: readings not stored yet, retry the batch") from err
        finally:
            self._waiting.pop(marker.topic, None)
