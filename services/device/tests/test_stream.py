"""Live stream over a real WebSocket (uvicorn, like behind nginx): authenticated, scoped to the caller's
org, fanned out through Redis; a slow client's bounded queue drops its oldest messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from device_test_helpers import Org, SiteClient, device_settings, provision, telemetry

from nattery_contracts.aio import within
from nattery_device.app import create_app
from nattery_device.mqtt.subscriber import forget_session
from nattery_device.stream.hub import ClientQueue
from nattery_shared.testing import TestIssuer, eventually, free_port


@pytest.fixture
async def server(test_issuer: TestIssuer) -> AsyncIterator[str]:
    settings = device_settings(test_issuer, stream_auth_timeout_s=1.0)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, ws="websockets-sansio", log_config=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task
    for suffix in ("telemetry", "control"):
        forget_session(settings.mqtt, f"{settings.device.mqtt_client_id}-{suffix}")


async def _next(ws: websockets.ClientConnection, timeout_s: float = 5.0) -> dict[str, object]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout_s)))


async def test_stream_is_authenticated_and_scoped_to_the_org(server: str, test_issuer: TestIssuer) -> None:
    org, other = Org(test_issuer), Org(test_issuer)
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        mine = await provision(http, org)
        theirs = await provision(http, other)

    async with websockets.connect(f"ws://{server}/stream?token=garbage") as bad:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await bad.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(f"ws://{server}/stream") as silent:  # no token, no first message
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(silent.recv(), 5)

    async with (
        websockets.connect(f"ws://{server}/stream?token={org.viewer_token}") as ws_query,
        websockets.connect(f"ws://{server}/stream") as ws_message,
    ):
        await ws_message.send(json.dumps({"token": org.viewer_token}))  # first-message auth
        for ws in (ws_query, ws_message):
            assert (await _next(ws))["type"] == "hello"
        edges = []
        for site in (theirs, mine):
            edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
            assert await asyncio.to_thread(edge.connect)
            edges.append(edge)
        # Ingest asks Redis whether some replica streams the org and caches the answer for a moment
        # (StreamPublisher.listening): publish rounds (the other org's site first, ours second) until
        # both streams have carried telemetry; everything they carried must then be ours.
        received: list[tuple[websockets.ClientConnection, list[dict[str, object]]]] = [
            (ws_query, []),
            (ws_message, []),
        ]
        rounds = 0

        def has_telemetry(messages: list[dict[str, object]]) -> bool:
            return any(m["type"] == "telemetry" for m in messages)

        async def streamed() -> bool:
            nonlocal rounds
            rounds += 1
            await asyncio.to_thread(edges[0].publish, "telemetry", telemetry(rounds, battery_soc_pct=11.0))
            await asyncio.to_thread(edges[1].publish, "telemetry", telemetry(rounds, battery_soc_pct=22.0))
            for ws, messages in received:
                with contextlib.suppress(TimeoutError):
                    while not has_telemetry(messages):
                        messages.append(dict(json.loads(await within(ws.recv(), 0.5))))
            return all(has_telemetry(messages) for _, messages in received)

        await eventually(streamed, timeout_s=20, interval_s=0)
        for _, messages in received:
            samples = [s for m in messages if m["type"] == "telemetry" for s in m["samples"]]  # type: ignore[attr-defined]
            assert {s["device_id"] for s in samples} == {mine["device"]["id"]}
            assert all(s["values"]["battery_soc_pct"] == 22.0 for s in samples)
        for edge in edges:
            edge.close()


def test_a_slow_client_loses_its_oldest_messages() -> None:
    queue = ClientQueue(maxlen=3)
    for i in range(5):
        queue.put(str(i))
    assert queue.dropped == 2

    async def drain() -> list[str]:
        return [await queue.get() for _ in range(3)]

    assert asyncio.run(drain()) == ["2", "3", "4"]
