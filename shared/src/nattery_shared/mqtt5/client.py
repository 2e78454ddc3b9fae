"""A QoS 1 subscriber that acknowledges a message only when the application says it is safe.

It speaks MQTT 5 itself on an asyncio stream (:mod:`nattery_shared.mqtt5.wire`); why not paho-mqtt's
``manual_ack`` is in the package docstring (measured: ``bench/mqtt_ack.py``).

- fixed client id, ``clean_start=False`` and a session expiry: the broker keeps our shared
  subscriptions, every message not yet acknowledged, and queues new ones while we are away;
- PUBACK goes out only after :meth:`AckingSubscriber.ack`, i.e. after the data is durable; a crash
  before that means the broker redelivers on reconnect;
- ``Receive Maximum`` caps the unacknowledged messages the broker sends us: the bound on our memory,
  the rest waits in the broker's queue for our session (back-pressure instead of an unbounded buffer);
- packets are decoded in bulk from each read, PUBACKs written in one batch;
- packet ids restart per connection: an ack is only sent for a delivery of the current connection
  (``generation``); older ones come again (DUP) after the reconnect and are acked then.

:func:`open_connection` is the CONNECT/CONNACK alone, for a publisher that writes
:func:`~nattery_shared.mqtt5.wire.publish` packets itself (the load generator).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from typing import NamedTuple

from nattery_contracts.aio import within
from nattery_shared.mqtt5 import wire
from nattery_shared.retry import Backoff, RetryLoop
from nattery_shared.settings import MqttSettings

__all__ = [
    "AckingSubscriber",
    "ConnectRefused",
    "Delivery",
    "forget_session",
    "forget_session_async",
    "open_connection",
]

log = logging.getLogger(__name__)


class Delivery(NamedTuple):  # a tuple: created per message, ~3x cheaper than a frozen dataclass
    generation: int
    mid: int
    topic: str
    payload: bytes


class ConnectRefused(Exception):
    pass


# What ends a session: the broker unreachable, gone, refusing us or speaking nonsense.
CONNECTION_ERRORS = (OSError, EOFError, TimeoutError, ConnectRefused, wire.ProtocolError)
# A connection dropped sooner than this after its SUBACK counts as failing (back-off), so two clients
# with one id, which the broker disconnects in turn, do not reconnect in a tight loop.
MIN_SESSION_S = 5.0


async def _open(settings: MqttSettings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=settings.ca_file) if settings.tls else None
    return await within(asyncio.open_connection(settings.host, settings.port, ssl=context, limit=1 << 22), 10)


async def _handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    settings: MqttSettings,
    client_id: str,
    *,
    clean_start: bool,
    session_expiry_s: int,
    receive_maximum: int,
) -> tuple[bool, bytearray]:
    """CONNECT/CONNACK; returns (session present, bytes already received after the CONNACK)."""
    password = settings.password.get_secret_value() if settings.password else None
    writer.write(
        wire.connect(
            client_id,
            username=settings.username,
            password=password,
            keepalive_s=settings.keepalive_s,
            clean_start=clean_start,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
        )
    )
    await writer.drain()
    buf = bytearray()
    while True:
        chunk = await within(reader.read(4096), 10)
        if not chunk:
            raise ConnectionError("broker closed the connection during CONNECT")
        buf += chunk
        packets, used = wire.split(buf, limit=1)
        if packets:
            kind, _, body = packets[0]
            if kind != wire.CONNACK:
                raise wire.ProtocolError(f"expected CONNACK, got packet type {kind}")
            session_present, reason = wire.decode_connack(body)
            if reason != 0:
                raise ConnectRefused(f"broker refused the connection (reason 0x{reason:02x})")
            # A resumed session's unacknowledged messages may follow in the same read: keep them.
            del buf[:used]
            return session_present, buf


async def open_connection(
    settings: MqttSettings,
    client_id: str,
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int = 65535,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]:
    """A connected stream (CONNACK received, reason Success): reader, writer, and what was read past
    the CONNACK. Raises :class:`ConnectRefused` when the broker says no."""
    reader, writer = await _open(settings)
    try:
        _, pending = await _handshake(
            reader,
            writer,
            settings,
            client_id,
            clean_start=clean_start,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
        )
    except BaseException:
        writer.close()
        raise
    return reader, writer, pending


class AckingSubscriber:
    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        filters: Sequence[str],
        receive_maximum: int = 1000,
        session_expiry_s: int = 7 * 24 * 3600,
        name: str = "mqtt",
        logger: logging.Logger | None = None,
    ) -> None:
        """``name`` prefixes every log message; ``logger`` (default this module's) is where they go, so
        a service's log filters and tests keep their own logger name."""
        self._settings = settings
        self._client_id = client_id
        self._filters = list(filters)
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._name = name
        self._log = logger or log
        self._queue: collections.deque[Delivery] = collections.deque()
        self._wakeup = asyncio.Event()
        self._generation = 0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        # One session per step: a session that was subscribed ends normally when its connection drops
        # (reconnect at once); one that could not connect or subscribe, or dropped within
        # MIN_SESSION_S, is retried with back-off (0.5 s doubling to 15 s), logged once when that
        # starts and once when it is subscribed again.
        self._subscribed_at = 0.0
        self._sessions = RetryLoop(
            self._session,
            name=f"{name}: broker connection",
            logger=self._log,
            every_s=0,
            backoff=Backoff(initial_s=0.5, max_s=15.0),
            retry_on=CONNECTION_ERRORS,
        )
        # Set once the broker granted our subscriptions (SUBACK), cleared when the connection drops.
        self.connected = asyncio.Event()
        self.session_present: bool | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-connection")

    async def close(self) -> None:
        """Disconnect normally; the session (and unacknowledged messages) stays at the broker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.write(wire.DISCONNECT_NORMAL)
                await within(writer.drain(), 2)
            writer.close()
        self.connected.clear()

    async def _run(self) -> None:
        await self._sessions.run()

    async def _session(self) -> None:
        """Connect, subscribe and read until the connection drops; raises when it never got as far as
        the SUBACK (retried with back-off), returns when an established connection ends."""
        reader, writer = await _open(self._settings)
        try:
            self.session_present, pending = await _handshake(
                reader,
                writer,
                self._settings,
                self._client_id,
                clean_start=False,
                session_expiry_s=self._session_expiry_s,
                receive_maximum=self._receive_maximum,
            )
            self._generation += 1
            generation = self._generation
            writer.write(wire.subscribe(1, self._filters))
            await writer.drain()
            self._writer = writer
            # ``connected`` waits for the SUBACK (set in _read): until then a brand-new shared group
            # does not exist at the broker and what sites publish to it is not queued for us.
            self._log.info("%s: connected (session present: %s)", self._name, self.session_present)
            pinger = asyncio.create_task(self._ping(writer))
            try:
                await self._read(reader, generation, pending)
            except CONNECTION_ERRORS as err:
                if not self.connected.is_set() or time.monotonic() - self._subscribed_at < MIN_SESSION_S:
                    raise  # never subscribed, or dropped at once: back off
                self._log.warning("%s: broker connection lost (%s), reconnecting", self._name, err)
            finally:
                pinger.cancel()
        finally:
            self.connected.clear()
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        interval = max(1.0, self._settings.keepalive_s / 2)
        while True:
            await asyncio.sleep(interval)
            writer.write(wire.PINGREQ)

    async def _read(self, reader: asyncio.StreamReader, generation: int, buf: bytearray) -> None:
        timeout_s = self._settings.keepalive_s * 1.5
        while True:
            if not buf or wire.split(buf, limit=1)[1] == 0:  # nothing complete yet: read more
                chunk = await within(reader.read(1 << 20), timeout_s)
                if not chunk:
                    raise EOFError("broker closed the connection")
                buf += chunk
            publishes, others, used = wire.split_publishes(buf)
            del buf[:used]
            if publishes:
                self._queue.extend(
                    [Delivery(generation, mid, topic, payload) for topic, mid, payload in publishes]
                )
                self._wakeup.set()
            for kind, _flags, body in others:
                if kind == wire.SUBACK:
                    _, codes = wire.decode_suback(body)
                    if any(code >= 0x80 for code in codes):
                        raise ConnectRefused(f"subscription refused: {codes.hex()}")
                    self.connected.set()
                    self._subscribed_at = time.monotonic()
                    self._sessions.failures.ok()  # logs the recovery, if we were failing
                elif kind == wire.DISCONNECT:
                    raise EOFError(f"broker sent DISCONNECT ({body[:1].hex() or '00'})")

    # --- consumer side --------------------------------------------------------------------------
    async def next_batch(self, max_messages: int) -> list[Delivery]:
        """Wait for at least one message; return up to ``max_messages`` in arrival order."""
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        popleft = self._queue.popleft
        return [popleft() for _ in range(min(max_messages, len(self._queue)))]

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """PUBACK every QoS 1 delivery of the current connection; returns how many were acked."""
        writer, current = self._writer, self._generation
        if writer is None:
            return 0
        mids = [d.mid for d in deliveries if d.generation == current and d.mid]
        if mids:
            writer.write(wire.pubacks(mids))
        return len(mids)

    @property
    def backlog(self) -> int:
        return len(self._queue)


async def forget_session_async(settings: MqttSettings, client_id: str) -> None:
    """Delete a persistent session at the broker (clean start, expiry 0, disconnect).

    A session left behind in a shared-subscription group keeps receiving its share of messages.
    """
    reader, writer = await _open(settings)
    try:
        await _handshake(
            reader, writer, settings, client_id, clean_start=True, session_expiry_s=0, receive_maximum=10
        )
        writer.write(wire.DISCONNECT_NORMAL)
        await writer.drain()
    finally:
        writer.close()


def forget_session(settings: MqttSettings, client_id: str) -> None:
    """Synchronous :func:`forget_session_async` (tests and tools outside an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(forget_session_async(settings, client_id))
        return
    import threading

    thread = threading.Thread(target=lambda: asyncio.run(forget_session_async(settings, client_id)))
    thread.start()
    thread.join(15)
