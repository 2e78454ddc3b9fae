"""MQTT client on aiomqtt with a reconnect loop and clean shutdown.

aiomqtt's ``async with client`` is reusable but not re-entrant; reconnecting means looping on
``MqttError`` (aiomqtt docs/reconnection.md). :func:`run_session` does that, logging a failing broker
once when it starts failing and once when it recovers, and calls ``session(client)`` on every
(re)connect so subscriptions are restored.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from nattery_shared.retry import Backoff, FailureLog
from nattery_shared.settings import MqttSettings

log = logging.getLogger(__name__)

Session = Callable[[aiomqtt.Client], Awaitable[None]]


def make_client(
    settings: MqttSettings,
    *,
    identifier: str | None = None,
    clean_session: bool | None = None,
    will: aiomqtt.Will | None = None,
    **kwargs: Any,
) -> aiomqtt.Client:
    tls_context = None
    if settings.tls:
        tls_context = ssl.create_default_context(cafile=settings.ca_file)
    return aiomqtt.Client(
        hostname=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        identifier=identifier or settings.client_id,
        clean_session=clean_session,
        keepalive=settings.keepalive_s,
        will=will,
        tls_context=tls_context,
        **kwargs,
    )


async def run_session(
    factory: Callable[[], aiomqtt.Client],
    session: Session,
    *,
    name: str = "mqtt",
    connected: asyncio.Event | None = None,
    min_delay_s: float = 0.5,
    max_delay_s: float = 15.0,
) -> None:
    """Run ``session`` on a connected client forever, reconnecting with back-off. Cancel to stop.

    Logged once when the broker connection is lost and once when it is back (the kit's ``FailureLog``).
    """
    backoff = Backoff(initial_s=min_delay_s, max_s=max_delay_s)
    failures = FailureLog(f"{name}: broker connection", log)
    delay_s = backoff.initial_s
    while True:
        client = factory()
        try:
            async with client:
                failures.ok()
                delay_s = backoff.initial_s
                if connected is not None:
                    connected.set()
                await session(client)
                return
        except aiomqtt.MqttError as err:
            if connected is not None:
                connected.clear()
            failures.failed(err)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, backoff.max_s)
