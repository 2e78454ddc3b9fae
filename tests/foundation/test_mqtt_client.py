"""The shared MQTT client reconnects after the broker goes away and restores its session."""

import asyncio
import contextlib

import aiomqtt
from pydantic import SecretStr

from nattery_shared.mqtt import make_client, run_session
from nattery_shared.settings import MqttSettings
from nattery_shared.testing import TEST_MQTT_PORT, TcpProxy


async def test_run_session_reconnects_and_resubscribes() -> None:
    proxy = TcpProxy("127.0.0.1", TEST_MQTT_PORT)
    await proxy.start()
    settings = MqttSettings(port=proxy.port, username="device-service", password=SecretStr("nattery-dev"))
    direct = MqttSettings(port=TEST_MQTT_PORT, username="device-service", password=SecretStr("nattery-dev"))
    sessions = 0
    received: asyncio.Queue[bytes] = asyncio.Queue()
    connected = asyncio.Event()

    async def session(client: aiomqtt.Client) -> None:
        nonlocal sessions
        sessions += 1
        await client.subscribe("nattery/v1/mqtt-test/dev/telemetry", qos=1)
        async for message in client.messages:
            await received.put(bytes(message.payload))  # type: ignore[arg-type]

    task = asyncio.create_task(
        run_session(
            lambda: make_client(settings), session, connected=connected, min_delay_s=0.1, max_delay_s=0.5
        )
    )
    try:
        await asyncio.wait_for(connected.wait(), 10)
        await asyncio.sleep(0.3)  # let the subscription land
        async with make_client(direct) as publisher:
            await publisher.publish("nattery/v1/mqtt-test/dev/telemetry", b"one", qos=1)
            assert await asyncio.wait_for(received.get(), 5) == b"one"

            await proxy.cut()  # broker "gone": the client notices and keeps retrying
            await asyncio.sleep(1.0)
            await proxy.restore()
            deadline = asyncio.get_running_loop().time() + 15
            while sessions < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            assert sessions == 2
            await asyncio.sleep(0.3)
            await publisher.publish("nattery/v1/mqtt-test/dev/telemetry", b"two", qos=1)
            assert await asyncio.wait_for(received.get(), 5) == b"two"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()
