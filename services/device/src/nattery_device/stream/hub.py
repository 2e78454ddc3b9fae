"""Live stream fan-out across replicas through Redis pub/sub.

Ingest publishes to ``device:stream:{org}`` (only while some replica has a listener for that org:
``PUBSUB NUMSUB``, cached briefly). Each replica subscribes to the channels of the orgs its WebSocket
clients belong to and copies every message into each client's bounded queue; a full queue drops its
oldest message, so a slow client loses data but never stalls the others or the ingest path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

STREAM_DROPPED = Counter("nattery_device_stream_dropped_total", "Stream messages dropped for slow clients")
STREAM_CLIENTS = Gauge("nattery_device_stream_clients", "Connected live-stream clients on this replica")


def channel(org_id: uuid.UUID) -> str:
    return f"device:stream:{org_id}"


class StreamPublisher:
    def __init__(self, redis: Redis, *, listeners_cache_s: float = 2.0) -> None:
        self._redis = redis
        self._cache_s = listeners_cache_s
        self._listeners: dict[uuid.UUID, tuple[float, bool]] = {}

    async def listening(self, org_id: uuid.UUID) -> bool:
        """Whether some replica streams this org (cached for a moment: build messages only then)."""
        checked = self._listeners.get(org_id)
        now = time.monotonic()
        if checked is None or now - checked[0] > self._cache_s:
            counts = await self._redis.pubsub_numsub(channel(org_id))
            checked = (now, bool(counts and counts[0][1]))
            self._listeners[org_id] = checked
        return checked[1]

    async def publish(self, org_id: uuid.UUID, message: dict[str, Any]) -> None:
        if await self.listening(org_id):
            await self._redis.publish(channel(org_id), json.dumps(message))


class ClientQueue:
    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, item: str) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            STREAM_DROPPED.inc()
        self._items.append(item)
        self._ready.set()

    async def get(self) -> str:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class StreamHub:
    def __init__(self, redis: Redis, *, client_queue: int = 500) -> None:
        self._redis = redis
        self._client_queue = client_queue
        self._clients: dict[uuid.UUID, set[ClientQueue]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def join(self, org_id: uuid.UUID) -> ClientQueue:
        queue = ClientQueue(self._client_queue)
        async with self._lock:
            first = org_id not in self._clients
            self._clients.setdefault(org_id, set()).add(queue)
            if first and self._pubsub is not None:
                await self._pubsub.subscribe(channel(org_id))
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read(), name="stream-reader")
        STREAM_CLIENTS.inc()
        return queue

    async def leave(self, org_id: uuid.UUID, queue: ClientQueue) -> None:
        async with self._lock:
            members = self._clients.get(org_id)
            if members is None:
                return
            members.discard(queue)
            STREAM_CLIENTS.dec()
            if not members:
                del self._clients[org_id]
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel(org_id))

    async def _read(self) -> None:
        """Copy the subscribed channels' messages to the clients until cancelled; a failing
        subscription (Redis down) is retried after 1 s, logged once when it fails and once when it
        works again."""
        await RetryLoop(
            self._read_some,
            name="stream subscription",
            logger=log,
            every_s=0,
            backoff=Backoff(initial_s=1.0, max_s=1.0),
        ).run()

    async def _read_some(self, max_messages: int = 100) -> None:
        """Hand out the messages waiting (up to ``max_messages``); returns after a second without one."""
        assert self._pubsub is not None
        for _ in range(max_messages):
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                return
            if message.get("type") != "message":
                continue
            name = (
                message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            )
            org_id = uuid.UUID(name.rsplit(":", 1)[1])
            data = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
            for queue in list(self._clients.get(org_id, ())):
                queue.put(data)
