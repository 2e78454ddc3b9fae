"""Through the real nginx gateway on 127.0.0.1:8080 (infrastructure/nginx): the user service behind
``/api/user/``, rate limit (429 + Retry-After), body limit (413), WebSocket upgrade.

The upstreams are fixed ports (3001-3005). The tests start what they need on a port that is free:
the user service on 3004, and a small WebSocket echo app on another free service port. A port in use
(a service started by ``make run``) is left alone and the test that needs it is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from nattery_shared.testing import own_address_client, test_settings_kwargs
from nattery_user.accounts import service as accounts
from nattery_user.app import create_app
from nattery_user.settings import UserSection, UserSettings

GATEWAY = "http://127.0.0.1:8080"
SERVICE_PORTS = {"device": 3001, "trading": 3002, "analytics": 3003, "user": 3004, "integration": 3005}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


pytestmark = pytest.mark.skipif(
    not port_open(8080), reason="gateway not running: bash infrastructure/local/setup.sh"
)


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, ws="websockets-sansio", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        task.cancel()
        pytest.skip(f"could not serve on {port}")
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def user_service() -> AsyncIterator[UserSettings]:
    if port_open(SERVICE_PORTS["user"]):
        pytest.skip("port 3004 is in use (a user service is running)")
    settings = UserSettings(
        **test_settings_kwargs(),
        user=UserSection(redis_prefix=f"nattery:user:gw-{uuid.uuid4().hex[:8]}:", consume_audit_events=False),
    )
    app = create_app(settings)
    async with serve(app, SERVICE_PORTS["user"]):
        yield settings


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws-echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.send_text(await websocket.receive_text())

    return app


async def test_login_through_the_gateway_sees_the_client_address(user_service: UserSettings) -> None:
    from nattery_user.context import open_context

    async with open_context(user_service) as (ctx, _):
        boot = await accounts.bootstrap_admin(
            ctx, org_name=f"Gateway {uuid.uuid4().hex[:8]}", email=f"gw-{uuid.uuid4().hex[:8]}@example.com"
        )
        async with httpx.AsyncClient(base_url=GATEWAY, timeout=10) as client:
            jwks = await client.get("/api/user/.well-known/jwks.json")
            assert jwks.status_code == 200 and jwks.json()["keys"]
            response = await client.post(
                "/api/user/auth/login",
                json={"email": boot.email, "password": boot.password},
                headers={"X-Request-ID": "gw-test-123", "X-Forwarded-For": "203.0.113.9"},
            )
            assert response.status_code == 200, response.text
            # The caller's request id reached the service and came back (exactly once: see test_one_request_id_header_per_response).
            assert set(response.headers.get_list("X-Request-ID")) == {"gw-test-123"}
            me = await client.get(
                "/api/user/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
            )
            assert me.status_code == 200 and me.json()["email"] == boot.email
        async with ctx.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT details FROM audit_log WHERE org_id = %s AND action = 'auth.login'", (boot.org_id,)
            )
            row = cast(dict[str, Any] | None, await cur.fetchone())
    # nginx appends its peer to X-Forwarded-For; uvicorn trusts 127.0.0.1 and takes the client's.
    assert row is not None and row["details"]["address"] == "203.0.113.9"


async def test_oversized_body_gets_413_before_reaching_the_service() -> None:
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=10) as client:
        response = await client.post(
            "/api/user/auth/login",
            content=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413


async def test_burst_above_the_limit_gets_429_with_retry_after() -> None:
    # From an address of its own: the burst empties no bucket that the next gateway test needs.
    limits = httpx.Limits(max_connections=30)
    async with own_address_client(GATEWAY, timeout=10, limits=limits) as client:
        responses = await asyncio.gather(*(client.get("/api/user/healthz") for _ in range(120)))
    limited = [r for r in responses if r.status_code == 429]
    assert limited, sorted({r.status_code for r in responses})
    assert int(limited[0].headers["Retry-After"]) >= 1


async def test_websocket_upgrade_passes_the_gateway() -> None:
    free = [name for name, port in SERVICE_PORTS.items() if name != "user" and not port_open(port)]
    if not free:
        pytest.skip("every service port is in use")
    service = free[0]
    url = f"ws://127.0.0.1:8080/api/{service}/ws-echo"
    async with serve(echo_app(), SERVICE_PORTS[service]), websockets.connect(url, open_timeout=5) as ws:
        await ws.send("hello battery")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello battery"
        await ws.send("again")
        assert await asyncio.wait_for(ws.recv(), 5) == "again"


async def test_one_request_id_header_per_response(user_service: UserSettings) -> None:
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=10) as client:
        response = await client.get("/api/user/.well-known/jwks.json", headers={"X-Request-ID": "gw-one-1"})
    assert response.headers.get_list("X-Request-ID") == ["gw-one-1"]
