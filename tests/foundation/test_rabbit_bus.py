"""The shared RabbitMQ client against the real broker: routing to another service's queue,
dead-lettering after the delivery limit, malformed messages straight to the DLQ."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from pydantic import SecretStr

from nattery_contracts.events import (
    AlertResolved,
    CloudEvent,
    EventType,
    make_event,
    parse_event,
)
from nattery_shared.rabbit import AMQP_MESSAGES, EventBus, QueueSpec
from nattery_shared.settings import RabbitSettings
from nattery_shared.testing import TEST_RABBIT_URL

SETTINGS = RabbitSettings(url=SecretStr(TEST_RABBIT_URL), delivery_limit=2)


def alert_event() -> CloudEvent[Any]:
    data = AlertResolved(
        alert_id=uuid.uuid4(), org_id=uuid.uuid4(), site_id=uuid.uuid4(), at=datetime.now(UTC)
    )
    return make_event(EventType.ALERT_RESOLVED, data, source="/services/device")


@pytest.fixture
async def buses() -> AsyncIterator[tuple[EventBus, EventBus]]:
    publisher = EventBus(SETTINGS, source="/services/device")
    consumer = EventBus(SETTINGS, source="/services/integration")
    for bus in (publisher, consumer):
        bus.start()
        await bus.wait_connected(15)
    yield publisher, consumer
    await publisher.close()
    await consumer.close()


async def drain_dlq(queue_name: str, timeout_s: float = 15.0) -> list[bytes]:
    connection = await aio_pika.connect(TEST_RABBIT_URL)
    try:
        channel = await connection.channel()
        dlq = await channel.get_queue(f"{queue_name}.dlq", ensure=True)
        deadline = asyncio.get_running_loop().time() + timeout_s
        bodies: list[bytes] = []
        while asyncio.get_running_loop().time() < deadline:
            message = await dlq.get(fail=False)
            if message is None:
                if bodies:
                    return bodies
                await asyncio.sleep(0.1)
                continue
            bodies.append(message.body)
            await message.ack()
        return bodies
    finally:
        await connection.close()


async def delete_queues(*names: str) -> None:
    connection = await aio_pika.connect(TEST_RABBIT_URL)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
            await channel.queue_delete(f"{name}.dlq")
    finally:
        await connection.close()


async def test_event_reaches_another_services_queue(buses: tuple[EventBus, EventBus]) -> None:
    publisher, consumer = buses
    queue = f"integration.test-{uuid.uuid4().hex[:8]}"
    received: asyncio.Queue[CloudEvent[Any]] = asyncio.Queue()

    async def handler(event: CloudEvent[Any]) -> None:
        await received.put(event)

    try:
        await consumer.consume(QueueSpec(queue, ["alert.*"]), handler)
        event = alert_event()
        await publisher.publish(event)
        got = await asyncio.wait_for(received.get(), 10)
        assert got.id == event.id
        assert isinstance(got.data, AlertResolved)
        assert got.data == event.data
    finally:
        await delete_queues(queue)


async def test_rejected_message_dead_letters_after_delivery_limit(buses: tuple[EventBus, EventBus]) -> None:
    publisher, consumer = buses
    queue = f"integration.poison-{uuid.uuid4().hex[:8]}"
    attempts: list[uuid.UUID] = []

    async def always_fails(event: CloudEvent[Any]) -> None:
        attempts.append(event.id)
        raise RuntimeError("cannot handle this one")

    try:
        await consumer.consume(QueueSpec(queue, ["alert.resolved"], delivery_limit=2), always_fails)
        event = alert_event()
        await publisher.publish(event)
        [body] = await drain_dlq(queue)
        assert parse_event(body).id == event.id
        # First delivery plus redeliveries up to the limit, then dead-lettered; never an endless loop.
        assert 2 <= len(attempts) <= 3
    finally:
        await delete_queues(queue)


async def test_malformed_message_goes_to_dlq_with_metric(buses: tuple[EventBus, EventBus]) -> None:
    _, consumer = buses
    queue = f"integration.malformed-{uuid.uuid4().hex[:8]}"
    handled: list[object] = []

    async def handler(event: CloudEvent[Any]) -> None:
        handled.append(event)

    before = AMQP_MESSAGES.labels(queue, "malformed")._value.get()
    try:
        await consumer.consume(QueueSpec(queue, ["alert.resolved"]), handler)
        connection = await aio_pika.connect(TEST_RABBIT_URL)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("nattery.events")
            await exchange.publish(aio_pika.Message(body=b"{not json"), routing_key="alert.resolved")
        assert await drain_dlq(queue) == [b"{not json"]
        assert handled == []
        assert AMQP_MESSAGES.labels(queue, "malformed")._value.get() == before + 1
    finally:
        await delete_queues(queue)
