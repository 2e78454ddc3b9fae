"""Cloud -> edge publishes (commands), QoS 1, on one aiomqtt connection kept up by ``run_session``.

``publish`` returns once the broker acknowledged (PUBACK); the broker then owns delivery to the site's
persistent session. While disconnected it raises at once, so callers keep the command ``pending`` and
the command sweeper sends it later.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from nattery_shared.mqtt import make_client, run_session
from nattery_shared.settings import MqttSettings


class NotConnected(Exception):
    pass


class MqttPublisher:
    def __init__(self, settings: MqttSettings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        async def session(client: aiomqtt.Client) -> None:
            self._client = client
            try:
                await asyncio.Event().wait()  # hold the connection until cancelled or lost
            finally:
                self._client = None

        await run_session(
            lambda: make_client(self._settings, identifier=self._client_id, clean_session=True),
            session,
            name="mqtt-publisher",
            connected=self.connected,
        )

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float = 10.0) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotConnected("not connected to the MQTT broker")
        try:
            await client.publish(topic, payload, qos=1, timeout=timeout_s)
        except aiomqtt.MqttError as err:
            raise NotConnected(str(err)) from err
