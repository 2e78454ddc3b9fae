"""``trading.dispatches``: a provider's ``dispatch.received`` is decided once (``service.py``)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import CloudEvent, DispatchReceived
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_shared.rabbit import EventBus, QueueSpec
from nattery_trading.dispatches.service import DispatchService

DISPATCHES_QUEUE = QueueSpec("trading.dispatches", ["dispatch.received"])


class DispatchConsumer:
    def __init__(self, dispatches: DispatchService, pool: AsyncConnectionPool) -> None:
        self.dispatches = dispatches
        self.pool = pool  # consumed event ids (processed_events)

    async def register(self, bus: EventBus) -> None:
        await bus.consume(
            DISPATCHES_QUEUE,
            PROCESSED_EVENTS.marking(self.pool, DISPATCHES_QUEUE.name, self.on_dispatch),
            already_handled=PROCESSED_EVENTS.checker(self.pool),
        )

    async def on_dispatch(self, event: CloudEvent[Any]) -> None:
        data: DispatchReceived = event.data
        await self.dispatches.receive_dispatch(data)
