"""Authenticated WebSocket with the caller's org's telemetry and status changes.

Authenticate with ``/stream?token=<access token>`` (browsers cannot set headers on WebSockets) or, to
keep tokens out of proxy logs, with a first message ``{"token": "..."}`` within a few seconds. Works
through the nginx gateway (``/api/device/stream``; it forwards the Upgrade headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from nattery_contracts.aio import within
from nattery_device.settings import DeviceSettings
from nattery_device.stream.hub import StreamHub
from nattery_shared.auth import Principal, TokenVerifier
from nattery_shared.errors import NatteryError

router = APIRouter(tags=["stream"])

POLICY_VIOLATION = 1008


async def _authenticate(websocket: WebSocket, verifier: TokenVerifier, timeout_s: float) -> Principal | None:
    token = websocket.query_params.get("token")
    if token is None:
        try:
            first = await within(websocket.receive_text(), timeout_s)
            token = json.loads(first).get("token")
        except (TimeoutError, ValueError, AttributeError, WebSocketDisconnect):
            token = None
    if not isinstance(token, str):
        return None
    try:
        return await verifier.verify(token)
    except NatteryError:
        return None


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    hub: StreamHub = websocket.state.stream_hub
    settings: DeviceSettings = websocket.state.settings
    await websocket.accept()
    principal = await _authenticate(
        websocket, websocket.state.verifier, settings.device.stream_auth_timeout_s
    )
    if principal is None:
        await websocket.close(code=POLICY_VIOLATION, reason="a valid access token is required")
        return
    queue = await hub.join(principal.org_id)
    await websocket.send_text(json.dumps({"type": "hello", "org_id": str(principal.org_id)}))

    async def pump() -> None:
        while True:
            await websocket.send_text(await queue.get())

    async def watch_close() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # clients may ping; anything else is ignored

    async def expire() -> None:
        # Access tokens are short-lived: the stream ends with the token; the client reconnects with a new one.
        await asyncio.sleep(max(0.0, principal.expires_at - time.time()))
        with contextlib.suppress(Exception):
            await websocket.close(code=POLICY_VIOLATION, reason="token expired")

    tasks = {asyncio.create_task(pump()), asyncio.create_task(watch_close()), asyncio.create_task(expire())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await hub.leave(principal.org_id, queue)
