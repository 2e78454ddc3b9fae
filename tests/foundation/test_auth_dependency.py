"""The shared auth dependency: signature, audience, expiry, role, and key rotation via JWKS refetch."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI

from nattery_shared.app import Readiness, create_app
from nattery_shared.auth import Operator, Viewer
from nattery_shared.settings import ServiceSettings
from nattery_shared.testing import SigningKey, TestIssuer, eventually, test_settings_kwargs

router = APIRouter()


@router.get("/viewer-only")
async def viewer_only(principal: Viewer) -> dict[str, str]:
    return {"org": str(principal.org_id), "role": principal.role.value}


@router.post("/operator-only")
async def operator_only(principal: Operator) -> dict[str, str]:
    return {"role": principal.role.value}


@pytest.fixture
async def client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        yield {}

    settings = ServiceSettings(service_name="authtest", **test_settings_kwargs(test_issuer))
    app = create_app(settings=settings, title="t", lifespan=lifespan, routers=[router])
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_passes_and_carries_org(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    response = await client.get(
        "/viewer-only",
        headers=bearer(test_issuer.token(role="viewer", org="6d1c1c8e-7c4f-4f35-9d0e-3a8c6f0e9b11")),
    )
    assert response.status_code == 200
    assert response.json() == {"org": "6d1c1c8e-7c4f-4f35-9d0e-3a8c6f0e9b11", "role": "viewer"}


@pytest.mark.parametrize(
    "case",
    ["missing", "bad_signature", "wrong_audience", "expired", "garbage", "unknown_kid"],
)
async def test_bad_tokens_get_401(client: httpx.AsyncClient, test_issuer: TestIssuer, case: str) -> None:
    headers: dict[str, str] = {}
    if case == "bad_signature":
        forger = SigningKey(kid=test_issuer.keys[0].kid)  # same kid, different private key
        headers = bearer(test_issuer.token(key=forger))
    elif case == "wrong_audience":
        headers = bearer(test_issuer.token(audience="someone-else"))
    elif case == "expired":
        headers = bearer(test_issuer.token(expires_in_s=-60))
    elif case == "garbage":
        headers = bearer("not.a.jwt")
    elif case == "unknown_kid":
        headers = bearer(test_issuer.token(key=SigningKey(kid="never-published")))
    response = await client.get("/viewer-only", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_viewer_on_operator_route_gets_403(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    response = await client.post("/operator-only", headers=bearer(test_issuer.token(role="viewer")))
    assert response.status_code == 403
    ok = await client.post("/operator-only", headers=bearer(test_issuer.token(role="admin")))
    assert ok.status_code == 200


async def test_rotated_key_is_fetched_on_unknown_kid(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    # Prime the cache with the current key set, then rotate in a new key.
    assert (await client.get("/viewer-only", headers=bearer(test_issuer.token()))).status_code == 200
    new_key = SigningKey(kid="test-rotated")
    test_issuer.keys.append(new_key)
    try:
        # The cache refetches at most once a second: the first call may come inside that second and
        # get 401; the new key is accepted once the refetch happens, without a restart.
        async def accepted() -> bool:
            response = await client.get("/viewer-only", headers=bearer(test_issuer.token(key=new_key)))
            return response.status_code == 200

        assert await eventually(accepted, timeout_s=10, interval_s=0.2)
    finally:
        test_issuer.keys.remove(new_key)
