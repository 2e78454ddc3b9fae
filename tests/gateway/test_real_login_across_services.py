"""One token from the real user service, used against device and trading, all through the real nginx.

Every other service test trusts a stand-in issuer (``nattery_shared.testing.TestIssuer``). Here the
user service signs the token, device-service and trading-service fetch its JWKS from the user service
itself (their default ``auth.jwks_url``), and every call goes through the gateway on 8080. A token
from the stand-in issuer must then be refused: that is what proves the services check the real keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from nattery_device.app import create_app as create_device_app
from nattery_device.settings import DeviceSection, DeviceSettings
from nattery_shared.testing import TestIssuer, test_settings_kwargs
from nattery_trading.app import create_app as create_trading_app
from nattery_trading.settings import TradingSettings
from nattery_user.accounts import service as accounts
from nattery_user.app import create_app as create_user_app
from nattery_user.context import open_context
from nattery_user.settings import UserSection, UserSettings

GATEWAY = "http://127.0.0.1:8080"
PORTS = {"device": 3001, "trading": 3002, "user": 3004}
ROOT = Path(__file__).resolve().parents[2]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.asynccontextmanager
async def serve(app: FastAPI, port: int) -> AsyncIterator[None]:
    if port_open(port):
        pytest.skip(f"port {port} is in use (a service started by `make run`?)")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped the server
        return server.started

    from nattery_shared.testing import eventually

    await eventually(started, timeout_s=30)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def without_stand_in_issuer() -> dict[str, Any]:
    # No ``auth`` section: each service verifies against its default JWKS, the real user service's.
    kwargs = test_settings_kwargs()
    kwargs.pop("auth", None)
    return kwargs


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[UserSettings]:
    run = uuid.uuid4().hex[:8]
    user = UserSettings(
        **without_stand_in_issuer(),
        user=UserSection(redis_prefix=f"nattery:user:login-{run}:", consume_audit_events=False),
    )
    device = DeviceSettings(
        **without_stand_in_issuer(),
        device=DeviceSection(
            ingest_enabled=False,
            mqtt_client_id=f"login-{run}",
            mqtt_share_group=f"login{run}",
            mosquitto_password_file=ROOT / "var" / "mosquitto" / "passwd",
            mosquitto_pid_file=None,
        ),
    )
    trading = TradingSettings(**without_stand_in_issuer())
    async with (
        serve(create_user_app(user), PORTS["user"]),
        serve(create_device_app(device), PORTS["device"]),
        serve(create_trading_app(trading), PORTS["trading"]),
    ):
        yield user


async def test_a_real_login_reaches_device_and_trading_through_the_gateway(
    stack: UserSettings, test_issuer: TestIssuer
) -> None:
    async with open_context(stack) as (ctx, _):
        boot = await accounts.bootstrap_admin(
            ctx, org_name=f"Login {uuid.uuid4().hex[:8]}", email=f"login-{uuid.uuid4().hex[:8]}@example.com"
        )
    async with httpx.AsyncClient(base_url=GATEWAY, timeout=15) as client:
        login = await client.post(
            "/api/user/auth/login", json={"email": boot.email, "password": boot.password}
        )
        assert login.status_code == 200, login.text
        real = {"Authorization": f"Bearer {login.json()['access_token']}"}

        sites = await client.get("/api/device/sites", headers=real)
        assert sites.status_code == 200, sites.text
        assert sites.json() == []  # a new org owns no site: the token's org reached the query
        tariffs = await client.get("/api/trading/tariffs", headers=real)
        assert tariffs.status_code == 200, tariffs.text

        # A well-formed token for the same org from a key the user service never published is refused.
        forged = {"Authorization": f"Bearer {test_issuer.token(role='admin', org=boot.org_id, sub='x')}"}
        for path in ("/api/device/sites", "/api/trading/tariffs"):
            refused = await client.get(path, headers=forged)
            assert refused.status_code == 401, (path, refused.status_code, refused.text)
