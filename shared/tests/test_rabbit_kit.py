"""The queue declaration and source convention against the real broker: a work queue declared with
the helper dead-letters a rejected message into ``{name}.dlq``, and the bus declares the same queue
with the same arguments (a different declaration would be refused)."""

from __future__ import annotations

import uuid

import aio_pika
import aiormq
import pytest
from pydantic import SecretStr

from nattery_shared.rabbit import (
    EventBus,
    QueueSpec,
    declare_dead_lettered_queue,
    event_source,
    queue_arguments,
)
from nattery_shared.settings import RabbitSettings
from nattery_shared.testing import TEST_RABBIT_URL, eventually

SETTINGS = RabbitSettings(url=SecretStr(TEST_RABBIT_URL), delivery_limit=3)


def test_event_source_convention() -> None:
    assert event_source("device") == "/services/device"
    assert event_source("fleet-worker") == "/services/fleet-worker"
    for bad in ("", "Device", "/services/device", "a b"):
        with pytest.raises(ValueError):
            event_source(bad)


def test_queue_arguments() -> None:
    assert queue_arguments("trading.x", delivery_limit=4, dead_letter_exchange="nattery.dlx") == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 4,
        "x-dead-letter-exchange": "nattery.dlx",
        "x-dead-letter-routing-key": "trading.x",
    }
    with pytest.raises(ValueError):
        queue_arguments("q", delivery_limit=0, dead_letter_exchange="nattery.dlx")


async def test_work_queue_dead_letters_a_rejected_message_and_matches_the_bus() -> None:
    name = f"kit.work-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(TEST_RABBIT_URL)
    bus = EventBus(SETTINGS, source=event_source("kit-test"))
    try:
        channel = await connection.channel()
        queue = await declare_dead_lettered_queue(
            channel, name, delivery_limit=3, dead_letter_exchange=SETTINGS.dead_letter_exchange
        )
        await channel.default_exchange.publish(aio_pika.Message(b"poison"), routing_key=name)
        message = await eventually(lambda: queue.get(fail=False), 10)
        await message.reject(requeue=False)
        dlq = await channel.get_queue(f"{name}.dlq", ensure=True)
        dead = await eventually(lambda: dlq.get(fail=False), 10)
        assert dead.body == b"poison"
        await dead.ack()

        # The bus's declaration of the same queue is accepted: same arguments, one definition.
        bus.start()
        await bus.wait_connected(15)
        await bus.declare_queue(QueueSpec(name, ["alert.resolved"], delivery_limit=3))
        # ...while any other delivery limit is refused by the broker.
        other = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await other.declare_queue(
                name,
                durable=True,
                arguments=queue_arguments(name, delivery_limit=9, dead_letter_exchange="nattery.dlx"),
            )
    finally:
        await bus.close()
        cleanup = await connection.channel()
        await cleanup.queue_delete(name)
        await cleanup.queue_delete(f"{name}.dlq")
        await connection.close()
