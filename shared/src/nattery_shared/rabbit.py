"""RabbitMQ event bus on aio-pika (ARCHITECTURE §5).

- One durable topic exchange ``nattery.events``; CloudEvents published persistent, mandatory, with
  publisher confirms (aio-pika waits for the broker's ack on ``publish``).
- Each consumer owns a durable quorum queue ``{service}.{purpose}`` with an explicit
  ``x-delivery-limit`` (RabbitMQ 3.10 has no default: a poison message would requeue forever) and
  dead-letters to ``nattery.dlx`` with the queue's name as routing key, into ``{queue}.dlq``.
- A malformed message (not a valid CloudEvent of a known type) is rejected straight to the DLQ; a
  handler that raises is requeued until the delivery limit, then dead-lettered. Never a crashed consumer.
- :func:`declare_dead_lettered_queue` is that queue declaration, for a work queue that is not an event
  consumer (trading's ``trading.site_plans``) as much as for the bus.
- Every event's ``source`` is :func:`event_source` of the producing service: ``/services/{service}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
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
from nattery_shared.retry import Backoff, retry_until_ok
from nattery_shared.settings import RabbitSettings

log = logging.getLogger(__name__)

EventHandler = Callable[[CloudEvent[Any]], Awaitable[None]]

AMQP_MESSAGES = Counter(
    "nattery_amqp_messages_total",
    "Messages handled by consumers, by queue and outcome",
    ["queue", "outcome"],  # ok | retried | malformed | duplicate
)
AMQP_PUBLISHED = Counter("nattery_amqp_published_total", "Events published", ["type"])


_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def event_source(service: str) -> str:
    """The CloudEvent ``source`` of everything ``service`` publishes: ``/services/{service}``.

    One convention, so a consumer (the audit log, a trace) can tell the producer from ``source`` alone.
    """
    if not _SERVICE_NAME.match(service):
        raise ValueError(f"not a service name: {service!r}")
    return f"/services/{service}"


def queue_arguments(name: str, *, delivery_limit: int, dead_letter_exchange: str) -> dict[str, Any]:
    """The arguments of a durable quorum queue that dead-letters to ``{name}.dlq`` past the limit.

    RabbitMQ 3.10 has no default delivery limit: without one a poison message requeues for ever.
    Declaring an existing queue with other arguments fails (PRECONDITION_FAILED), so every declarer
    of a queue must use these.
    """
    if delivery_limit < 1:
        raise ValueError("delivery_limit must be >= 1")
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-routing-key": name,
    }


async def declare_dead_lettered_queue(
    channel: AbstractChannel,
    name: str,
    *,
    delivery_limit: int,
    dead_letter_exchange: str,
    exchange: str | None = None,
    routing_keys: Sequence[str] = (),
) -> AbstractQueue:
    """Declare (idempotently) the quorum queue ``name``, its DLQ ``{name}.dlq`` bound to
    ``dead_letter_exchange`` by the queue's name, and the queue's bindings to ``exchange``.

    The dead-letter exchange is declared too (durable topic), so a work queue on the default exchange
    needs nothing else.
    """
    if routing_keys and exchange is None:
        raise ValueError("routing_keys need an exchange")
    await channel.declare_exchange(dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    dlq = await channel.declare_queue(f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dead_letter_exchange, routing_key=name)
    queue = await channel.declare_queue(
        name,
        durable=True,
        arguments=queue_arguments(
            name, delivery_limit=delivery_limit, dead_letter_exchange=dead_letter_exchange
        ),
    )
    for key in routing_keys:
        await queue.bind(exchange or "", routing_key=key)
    return queue


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
        await retry_until_ok(
            self._connect_once,
            name="rabbitmq connection",
            logger=log,
            backoff=Backoff(initial_s=0.5, max_s=10.0),
            retry_on=(TimeoutError, OSError, aio_pika.exceptions.AMQPError),
        )

    async def _connect_once(self) -> None:
        connection = await aio_pika.connect_robust(self._settings.url.get_secret_value(), timeout=5)
        try:
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
        except BaseException:
            # A half-set-up connection is closed, not left behind: the retry makes a new one, and a
            # RobustConnection left open keeps reconnecting for ever (it even swallows a cancel then).
            self._connection = self._channel = None
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())
            raise
        self._connected.set()

    async def close(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            # Wait for it: cancelled between connecting and storing, it closes its own connection.
            await asyncio.wait([self._connect_task])  # its outcome is not ours to raise
        if self._connection is not None:
            await self._connection.close()
        self._connected.clear()

    async def ping(self) -> None:
        if self._connection is None or self._connection.is_closed or not self._connected.is_set():
            raise ConnectionError("not connected to rabbitmq")

    # --- topology --------------------------------------------------------------------------------
    async def declare_queue(self, spec: QueueSpec) -> AbstractQueue:
        """Declare a quorum queue with its DLQ and bindings (idempotent)."""
        return await declare_dead_lettered_queue(
            self._require_channel(),
            spec.name,
            delivery_limit=spec.delivery_limit or self._settings.delivery_limit,
            dead_letter_exchange=self._settings.dead_letter_exchange,
            exchange=self._settings.exchange,
            routing_keys=spec.routing_keys,
        )

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
