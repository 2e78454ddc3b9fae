"""The MQTT link: presence (retained state + last will), command subscription, outbox drain, and sending
the Home Assistant discovery configs (built by ``discovery.py``).

aiomqtt 2.x has no disk persistence and no auto-reconnect (platform.md §5): the loop below reconnects
with back-off, and everything that must survive an outage goes through the SQLite outbox; a row is
deleted only after ``publish(qos=1)`` returned, i.e. after the broker's PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiomqtt

from nattery_contracts.aio import wait_event, within
from nattery_contracts.mqtt import DeviceStatus, State, TopicSuffix, topic

from .metrics import Metrics
from .outbox import Outbox
from .settings import BridgeSettings

log = logging.getLogger(__name__)

CommandHandler = Callable[[bytes], Coroutine[Any, Any, None]]


def _now() -> datetime:
    return datetime.now(UTC)


class MqttLink:
    def __init__(
        self,
        settings: BridgeSettings,
        outbox: Outbox,
        metrics: Metrics,
        on_command: CommandHandler,
        discovery: list[tuple[str, bytes]],
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.metrics = metrics
        self.on_command = on_command
        self.discovery = discovery  # (topic, payload), retained
        self.connected = False
        self.disconnected_since: float | None = time.monotonic()  # not connected yet at start
        self.status = DeviceStatus.ONLINE
        self._client: aiomqtt.Client | None = None
        s = settings
        self.command_topic = topic(s.site, s.device, TopicSuffix.COMMAND)
        self.state_topic = topic(s.site, s.device, TopicSuffix.STATE)
        self.ha_status_topic = f"{s.discovery.prefix}/status"
        self.connects = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ presence
    def _state_payload(self, status: DeviceStatus) -> bytes:
        st = State(status=status, ts=_now(), firmware=self.settings.firmware, profile=self.settings.profile)
        return st.model_dump_json().encode()

    async def set_status(self, status: DeviceStatus) -> None:
        if status == self.status:
            return
        self.status = status
        client = self._client
        if client is not None and self.connected:
            try:
                await client.publish(self.state_topic, self._state_payload(status), qos=1, retain=True)
            except aiomqtt.MqttError as e:
                log.info("state publish failed (will be re-sent on reconnect): %s", e)

    async def publish_discovery(self, client: aiomqtt.Client) -> None:
        if not self.settings.discovery.enabled:
            return
        for t, payload in self.discovery:
            await client.publish(t, payload, qos=1, retain=True)

    # ------------------------------------------------------------ main loop
    def _client_kwargs(self) -> dict[str, Any]:
        m = self.settings.mqtt
        kw: dict[str, Any] = {
            "port": m.port,
            "username": m.username,
            "password": m.password.get_secret_value() if m.password else None,
            # The broker admits a site only under client ids `<site>` / `<site>.<name>` (site-guard plugin).
            "identifier": f"{self.settings.site}.bridge-{self.settings.device}",
            "clean_session": False,  # the broker keeps commands while we are away (expiry guards them)
            "keepalive": m.keepalive_s,
            "timeout": m.publish_timeout_s,
            "will": aiomqtt.Will(
                self.state_topic, self._state_payload(DeviceStatus.OFFLINE), qos=1, retain=True
            ),
            "max_inflight_messages": max(20, m.publish_window),
        }
        if m.tls:
            ctx = ssl.create_default_context(cafile=m.ca_file)
            kw["tls_context"] = ctx
        return kw

    async def run(self) -> None:
        delay = self.settings.mqtt.reconnect_min_s
        while True:
            try:
                async with aiomqtt.Client(self.settings.mqtt.host, **self._client_kwargs()) as client:
                    self._client = client
                    self.connected = True
                    self.disconnected_since = None
                    self.connects += 1
                    self.metrics.mqtt_connected.set(1)
                    delay = self.settings.mqtt.reconnect_min_s
                    log.info("connected to MQTT %s:%s", self.settings.mqtt.host, self.settings.mqtt.port)
                    # Subscribed (SUBACK received) before saying online: device-service redelivers a
                    # device's pending commands when it comes online, and a command the broker receives
                    # before the subscription exists is dropped (no subscriber, not retained).
                    granted = await client.subscribe(self.command_topic, qos=1)
                    # 0x80 in the SUBACK: refused (an ACL); paho's ReasonCodes compare as ints
                    if any(code >= 0x80 for code in granted):
                        raise aiomqtt.MqttError(
                            f"the broker refused the subscription to {self.command_topic}"
                        )
                    if self.settings.discovery.enabled:
                        await client.subscribe(self.ha_status_topic, qos=1)
                    await client.publish(
                        self.state_topic, self._state_payload(self.status), qos=1, retain=True
                    )
                    await self.publish_discovery(client)
                    try:
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._read(client))
                            tg.create_task(self._drain(client))
                    except asyncio.CancelledError:
                        # Shutting down: a clean DISCONNECT does not fire the last will, so say it.
                        with contextlib.suppress(Exception):
                            await within(
                                client.publish(
                                    self.state_topic,
                                    self._state_payload(DeviceStatus.OFFLINE),
                                    qos=1,
                                    retain=True,
                                ),
                                2.0,
                            )
                        raise
            except* aiomqtt.MqttError as eg:
                log.warning("MQTT link down: %s", eg.exceptions[0])
                self.metrics.errors.labels("mqtt").inc()
            except* Exception as eg:  # a bug must not end the link for good
                log.error("MQTT link failed", exc_info=eg.exceptions[0])
                self.metrics.errors.labels("mqtt_bug").inc()
            finally:
                if self.connected:
                    self.disconnected_since = time.monotonic()
                self.connected = False
                self._client = None
                self.metrics.mqtt_connected.set(0)
            await asyncio.sleep(delay)
            delay = min(self.settings.mqtt.reconnect_max_s, delay * 2)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
            if message.topic.matches(self.command_topic):
                # Handled in its own task so a long-running command never stalls the reader; the
                # handler records the id synchronously, so duplicates and order are safe.
                task = asyncio.create_task(self.on_command(bytes(data)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif message.topic.matches(self.ha_status_topic) and bytes(data).strip() == b"online":
                log.info("Home Assistant came online: re-sending discovery")
                await self.publish_discovery(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        window = self.settings.mqtt.publish_window
        outbox = self.outbox
        while True:
            rows = outbox.peek(window)
            if not rows:
                outbox.wake.clear()
                await wait_event(outbox.wake, 1.0)
                continue
            # Publishes are issued in row order (paho keeps that order on the wire); each returns
            # after its PUBACK. Only acknowledged rows are deleted.
            results = await asyncio.gather(
                *(client.publish(r.topic, r.payload, qos=1, retain=r.retain) for r in rows),
                return_exceptions=True,
            )
            outbox.acknowledged([r for r, res in zip(rows, results, strict=True) if res is None])
            errors = [res for res in results if isinstance(res, BaseException)]
            if errors:
                err = errors[0]
                if isinstance(err, aiomqtt.MqttError):
                    raise err
                raise aiomqtt.MqttError(f"publish failed: {err!r}")
