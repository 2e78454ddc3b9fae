"""The nginx gateway on 127.0.0.1:8080 (var/nginx, rendered from infrastructure/nginx/).

The services need not be running: a down upstream answers 503 from the gateway, which is enough for
the routing, body-limit and rate-limit checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from nattery_shared.testing import own_address_client

SERVICES = ["device", "trading", "analytics", "user", "integration"]
DOWN_OR_UP = {200, 401, 403, 404, 405, 422, 503}


@pytest.fixture
async def http(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        yield client


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("path", ["metrics", "docs", "openapi.json", "redoc"])
async def test_internal_endpoints_are_not_exposed(http: httpx.AsyncClient, service: str, path: str) -> None:
    response = await http.get(f"/api/{service}/{path}")
    assert response.status_code == 404
    assert response.json() == {"detail": "not found"}


async def test_security_headers_and_request_id(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/device/readyz", headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]

    generated = await http.get("/api/device/readyz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["X-Request-ID"] != "bad id with spaces"
    assert len(generated.headers["X-Request-ID"]) == 32


async def test_cors_only_for_the_dashboard_origin(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/api/user/auth/login",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

    foreign = await http.options("/api/user/auth/login", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers


async def test_oversized_body_is_refused_with_413(http: httpx.AsyncClient) -> None:
    body = b"x" * (2 * 1024 * 1024)
    response = await http.post("/api/device/sites", content=body)
    assert response.status_code == 413
    # Price uploads have a 20 MB limit: the same body passes the gateway.
    upload = await http.post("/api/trading/prices/import", content=body)
    assert upload.status_code in DOWN_OR_UP


async def test_burst_from_one_address_gets_429_with_retry_after(gateway: str) -> None:
    # 20 r/s with a burst of 40 per address: 120 concurrent requests must overflow it.
    # From an address of its own: the burst empties no bucket that the next gateway test needs.
    limits = httpx.Limits(max_connections=30)
    async with own_address_client(gateway, timeout=10, limits=limits) as client:
        responses = await asyncio.gather(*(client.get("/api/analytics/readyz") for _ in range(120)))
    limited = [r for r in responses if r.status_code == 429]
    assert limited, sorted({r.status_code for r in responses})
    assert limited[0].headers["Retry-After"] == "1"
    assert limited[0].headers["X-Frame-Options"] == "DENY"
    assert {r.status_code for r in responses} <= DOWN_OR_UP | {429}
