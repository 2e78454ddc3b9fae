"""The service starts with its plumbing and answers the operator views."""

from __future__ import annotations

import uuid

import httpx
from asgi_lifespan import LifespanManager

from nattery_shared.testing import TestIssuer, bearer, eventually


async def test_service_starts_and_lists_providers_and_jobs(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready)
    headers = bearer(test_issuer, uuid.uuid4(), "viewer")
    providers = await client.get("/providers", headers=headers)
    assert providers.status_code == 200, providers.text
    names = {p["name"] for p in providers.json()}
    assert {"octopus", "elexon", "modo", "entsoe", "open_meteo"} <= names
    assert all(p["breaker_state"] == "closed" for p in providers.json())
    jobs = await client.get("/jobs", headers=headers)
    assert jobs.status_code == 200, jobs.text


async def test_a_provider_error_reaching_an_answer_is_the_projects_error(test_issuer: TestIssuer) -> None:
    from fastapi import APIRouter
    from integration_test_helpers import integration_settings

    from nattery_integration.app import create_app
    from nattery_integration.areas import Area
    from nattery_integration.providers.errors import ProviderRateLimited, ProviderRejected

    router = APIRouter()

    @router.get("/limited")
    async def limited() -> None:
        raise ProviderRateLimited("octopus", "HTTP 429", retry_after_s=42.5)

    @router.get("/rejected")
    async def rejected() -> None:
        raise ProviderRejected("modo", 401, b'{"detail": "Invalid token"}')

    app = create_app(
        integration_settings(test_issuer), areas=[Area(name="t", routers=[router])], discover_areas=False
    )
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://i") as client,
    ):
        response = await client.get("/limited")
        assert response.status_code == 429 and response.headers["Retry-After"] == "42"
        assert response.json()["error"]["details"] == {"provider": "octopus"}
        response = await client.get("/rejected")
        assert response.status_code == 503
        assert response.json()["error"]["details"]["status"] == 401
