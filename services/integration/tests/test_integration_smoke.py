"""The service starts with its plumbing and answers the operator views."""

from __future__ import annotations

import uuid

import httpx

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
