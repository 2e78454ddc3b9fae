"""RabbitMQ event bus on aio-pika (ARCHITECTURE §5).

- One durable topic exchange ``nattery.events``; CloudEvents published persistent, mandatory, with
  publisher confirms (aio-pika waits for the broker's ack on ``publish``).
- Each consumer owns a durable quorum queue ``{service}.{purpose}`` with an explicit
  ``x-delivery-limit`` (RabbitMQ 3.10 has no default: a poison message would requeue forever) and
  dead-letters to ``nattery.dlx`` with the queue's name as routing key, into ``{queue}.dlq``.
- A malformed message (not a valid CloudEvent of a known type) is rejected straight to the DLQ; a
  handler that raises is requeued until the delivery limit, then dead-lettered. Never a crashed consumer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from prometheus_client import Counter
from pydantic import ValidationError

from nattery_contracts.aio import within
from nattery_contracts.events import CloudEvent, parse_event
from nattery_shared.logging import request_id_var
from nattery_shared.settings import RabbitSettings

log = logging.getLogger(__name__)

EventHandler = Callable[[CloudEvent[Any]], Awaitable[None]]

AMQP_MESSAGES = Counter(
    "nattery_amqp_messages_total",
    "Messages handled by consumers, by queue and outcome",
    ["queue", "outcome"],  # ok | retried | malformed | duplicate
)
AMQP_PUBLISHED = Counter("nattery_amqp_published_total", "Events published", ["type"])


@dataclass(frozen=True)
class QueueSpec:
    name: str  # {service}.{purpose}
    routing_keys: Sequence[str]
    delivery_limit: int | None = None  # defaults to settings.delivery_limit


class EventBus:
    """Publisher and consumer over one robust connection (reconnects and restores topology)."""

    def __init__(self, settings: RabbitSettings, *, source: str) -> None:
        self._settings = settings
        self._source = source
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connected = asyncio.Event()
        self._connect_task: asyncio.Task[None] | None = None
        self._consumers: list[tuple[QueueSpec, EventHandler, Callable[[str], Awaitable[bool]] | None]] = []

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background so the service starts while RabbitMQ is down."""
        self._connect_task = asyncio.create_task(self._connect_forever(), name="rabbit-connect")

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await within(self._connected.wait(), timeout_s)

    async def _connect_forever(self) -> None:
        delay_s = 0.5
        failing = False
        while True:
            try:
                await self._connect_once()
                if failing:
                    log.info("rabbitmq reachable again")
                return
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as err:
                if not failing:
                    log.warning("rabbitmq unreachable, retrying: %s", err)
                    failing = True
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 10.0)

    async def _connect_once(self) -> None:
        connection = await aio_pika.connect_robust(self._settings.url.get_secret_value(), timeout=5)
        channel: AbstractRobustChannel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=self._settings.prefetch_count)
        self._exchange = await channel.declare_exchange(
            self._settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_exchange(
            self._settings.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._connection, self._channel = connection, channel
        for spec, handler, seen in self._consumers:
            await self._start_consumer(spec, handler, seen)
        self._connected.set()

    async def close(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self._connection is not None:
            await self._connection.close()
        self._connected.clear()

    async def ping(self) -> None:
        if self._connection is None or self._connection.is_closed or not self._connected.is_set():
            raise ConnectionError("not connected to rabbitmq")

    # --- topology --------------------------------------------------------------------------------
    async def declare_queue(self, spec: QueueSpec) -> AbstractQueue:
        """Declare a quorum queue with its DLQ and bindings (idempotent)."""
        channel = self._require_channel()
        limit = spec.delivery_limit or self._settings.delivery_limit
        dlq = await channel.declare_queue(
            f"{spec.name}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(self._settings.dead_letter_exchange, routing_key=spec.name)
        queue = await channel.declare_queue(
            spec.name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": limit,
                "x-dead-letter-exchange": self._settings.dead_letter_exchange,
                "x-dead-letter-routing-key": spec.name,
            },
        )
        for key in spec.routing_keys:
            await queue.bind(self._settings.exchange, routing_key=key)
        return queue

    # --- publish ---------------------------------------------------------------------------------
    async def publish(self, event: CloudEvent[Any], *, timeout_s: float = 10.0) -> None:
        """Publish and wait for the broker's confirm. Raises if unroutable or not confirmed."""
        if self._exchange is None:
            await self.wait_connected(timeout_s)
        assert self._exchange is not None
        if event.requestid is None and (rid := request_id_var.get()) is not None:
            event = event.model_copy(update={"requestid": rid})
        message = aio_pika.Message(
            body=event.model_dump_json().encode(),
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(event.id),
            type=event.type.value,
            headers={"ce_source": event.source},
        )
        await self._exchange.publish(message, routing_key=event.type.value, timeout=timeout_s)
        AMQP_PUBLISHED.labels(event.type.value).inc()

    # --- consume ---------------------------------------------------------------------------------
    async def consume(
        self,
        spec: QueueSpec,
        handler: EventHandler,
        *,
        already_handled: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        """Register a consumer; it is (re)started whenever the connection is (re)established.

        ``already_handled(event_id)`` lets a service skip redeliveries it has already applied
        (idempotency by event id); handlers should still be idempotent themselves.
        """
        self._consumers.append((spec, handler, already_handled))
        if self._connected.is_set():
            await self._start_consumer(spec, handler, already_handled)

    async def _start_consumer(
        self, spec: QueueSpec, handler: EventHandler, seen: Callable[[str], Awaitable[bool]] | None
    ) -> None:
        queue = await self.declare_queue(spec)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._handle(spec.name, message, handler, seen)

        await queue.consume(on_message)

    async def _handle(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        handler: EventHandler,
        seen: Callable[[str], Awaitable[bool]] | None,
    ) -> None:
        try:
            event = parse_event(message.body)
        except (ValidationError, ValueError, KeyError) as err:
            log.warning("malformed message on %s dead-lettered: %s", queue, str(err)[:300])
            AMQP_MESSAGES.labels(queue, "malformed").inc()
            await message.reject(requeue=False)
            return
        token = request_id_var.set(event.requestid)
        try:
            if seen is not None and await seen(str(event.id)):
                AMQP_MESSAGES.labels(queue, "duplicate").inc()
                await message.ack()
                return
            await handler(event)
        except asyncio.CancelledError:
            await message.nack(requeue=True)
            raise
        except Exception:
            # Requeued; the quorum queue counts deliveries and dead-letters past x-delivery-limit.
            log.exception("handler for %s failed on event %s (%s)", queue, event.id, event.type)
            AMQP_MESSAGES.labels(queue, "retried").inc()
            await message.nack(requeue=True)
        else:
            AMQP_MESSAGES.labels(queue, "ok").inc()
            await message.ack()
        finally:
            request_id_var.reset(token)

    def _require_channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise ConnectionError("not connected to rabbitmq")
        return self._channel
