"""Authorization matrix over every route of every service (ARCHITECTURE §8).

Each service's ``create_app`` is built with test settings and started against the local test servers
(``conftest.py``). Every route in its OpenAPI document (and every WebSocket route) must appear in
``REQUIRED`` below — a new route that is not in the table fails ``test_every_route_is_in_the_table``, so
it cannot slip through without someone deciding who may call it. Org A and org B each get real data
made through the services' own APIs: users (user service), a site with a device and a command (device
service), the same site's battery, tariffs, strategy, schedule and actuals plus a site held by an
emergency stop (trading service). For each HTTP route:

- anonymous (and a garbage token) gets 401 (unless the route is public);
- each role below the requirement gets 403;
- the required role succeeds (2xx) on org A's real resources (destructive routes on throwaway ones);
- every role of org B, with org A's ids in the path, query or body, gets 403 (below the requirement)
  or 404/403, and changes nothing of org A's; routes without org A's ids (lists, creations) succeed and
  never mention org A's ids, slugs or users;
- org A's ids smuggled into queries and bodies next to org B's own resources are refused too.

The device ``/stream`` WebSocket refuses anonymous connections and sends a token's org only its own data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
import websockets
from authz_world import OP, A, Call, OrgData, V, World

from nattery_shared.auth import Role
from nattery_trading.tariffs.repository import TariffRepository

PUBLIC = None

# Who may call what. ``PUBLIC`` routes need no token. Keep in step with the endpoints (the ``Viewer`` /
# ``Operator`` / ``Admin`` dependency of each handler).
REQUIRED: dict[tuple[str, str, str], Role | None] = {
    # device
    ("device", "GET", "/sites"): V,
    ("device", "POST", "/sites"): A,
    ("device", "GET", "/sites/{site_id}"): V,
    ("device", "PATCH", "/sites/{site_id}"): A,
    ("device", "DELETE", "/sites/{site_id}"): A,
    ("device", "POST", "/sites/{site_id}/credentials/revoke"): A,
    ("device", "POST", "/sites/{site_id}/credentials/rotate"): A,
    ("device", "GET", "/devices"): V,
    ("device", "POST", "/sites/{site_id}/devices"): A,
    ("device", "GET", "/devices/{device_id}"): V,
    ("device", "PATCH", "/devices/{device_id}"): A,
    ("device", "DELETE", "/devices/{device_id}"): A,
    ("device", "GET", "/devices/{device_id}/latest"): V,
    ("device", "GET", "/sites/{site_id}/latest"): V,
    ("device", "GET", "/latest"): V,
    ("device", "GET", "/devices/{device_id}/history"): V,
    ("device", "GET", "/devices/{device_id}/stats"): V,
    ("device", "GET", "/devices/{device_id}/events"): V,
    ("device", "GET", "/ingest/rejected"): A,
    ("device", "POST", "/devices/{device_id}/commands"): OP,
    ("device", "GET", "/commands/{command_id}"): V,
    ("device", "GET", "/gateways"): A,
    ("device", "POST", "/gateways"): A,
    ("device", "GET", "/gateways/{gateway_id}"): A,
    ("device", "POST", "/gateways/{gateway_id}/rotate"): A,
    ("device", "POST", "/gateways/{gateway_id}/revoke"): A,
    # a gateway's X-API-Key, no bearer token (services/device/tests/test_gateway_ingest.py: keys, org scope)
    ("device", "POST", "/ingest"): PUBLIC,
    ("device", "GET", "/alerts"): V,
    ("device", "GET", "/alerts/{alert_id}"): V,
    ("device", "POST", "/alerts/{alert_id}/acknowledge"): OP,
    ("device", "POST", "/alerts/{alert_id}/resolve"): OP,
    ("device", "GET", "/alert-rules"): V,
    ("device", "POST", "/alert-rules"): OP,
    ("device", "GET", "/alert-rules/{rule_id}"): V,
    ("device", "PUT", "/alert-rules/{rule_id}"): OP,
    ("device", "DELETE", "/alert-rules/{rule_id}"): OP,
    ("device", "WS", "/stream"): V,  # token in ?token= or the first message; test_stream_* below
    # trading
    ("trading", "PUT", "/sites/{site_id}/battery"): A,
    ("trading", "PUT", "/sites/{site_id}/strategy"): OP,
    ("trading", "GET", "/sites/{site_id}/strategy"): V,
    ("trading", "GET", "/tariffs"): V,
    ("trading", "POST", "/tariffs"): A,
    ("trading", "PUT", "/sites/{site_id}/tariffs/{direction}"): A,
    ("trading", "POST", "/sites/{site_id}/plan"): OP,
    ("trading", "GET", "/sites/{site_id}/schedule"): V,
    ("trading", "POST", "/sites/{site_id}/actuals"): OP,
    ("trading", "GET", "/sites/{site_id}/schedule/compare"): V,
    ("trading", "POST", "/emergency-stops"): OP,
    ("trading", "GET", "/emergency-stops"): V,
    ("trading", "DELETE", "/emergency-stops/{stop_id}"): OP,
    ("trading", "POST", "/optimiser/plan"): V,  # stateless what-if: computes, saves nothing
    # user
    ("user", "GET", "/.well-known/jwks.json"): PUBLIC,
    ("user", "POST", "/auth/login"): PUBLIC,
    ("user", "POST", "/auth/refresh"): PUBLIC,
    ("user", "POST", "/auth/logout"): PUBLIC,
    ("user", "POST", "/auth/token"): PUBLIC,
    ("user", "GET", "/me"): V,
    ("user", "POST", "/me/password"): V,
    ("user", "GET", "/me/settings"): V,
    ("user", "PUT", "/me/settings"): V,
    ("user", "GET", "/users"): A,
    ("user", "POST", "/users"): A,
    ("user", "GET", "/users/{user_id}"): A,
    ("user", "PATCH", "/users/{user_id}"): A,
    ("user", "POST", "/users/{user_id}/unlock"): A,
    ("user", "GET", "/api-tokens"): V,
    ("user", "POST", "/api-tokens"): V,
    ("user", "DELETE", "/api-tokens/{token_id}"): V,
    ("user", "GET", "/audit"): A,
    # integration
    ("integration", "GET", "/providers"): V,
    ("integration", "GET", "/jobs"): V,
    ("integration", "GET", "/connections"): V,
    ("integration", "POST", "/connections"): A,
    ("integration", "GET", "/connections/{connection_id}"): V,
    ("integration", "PATCH", "/connections/{connection_id}"): A,
    ("integration", "DELETE", "/connections/{connection_id}"): A,
    ("integration", "POST", "/connections/{connection_id}/test"): OP,
    ("integration", "GET", "/markets/prices"): V,  # public market data, no org's
    ("integration", "PUT", "/sites/{site_id}/pv-array"): A,
    ("integration", "GET", "/sites/{site_id}/pv-array"): V,
    ("integration", "POST", "/webhooks/{provider}"): PUBLIC,  # signed by the provider (HMAC), no token
    # analytics
    ("analytics", "GET", "/sites/{site_id}/forecasts/load"): V,
    ("analytics", "POST", "/sites/{site_id}/forecasts/load"): OP,
    ("analytics", "GET", "/sites/{site_id}/flows"): V,
    ("analytics", "GET", "/flows"): V,
}
# Every service's operational routes are public (the gateway does not expose /metrics or docs).
OPS_ROUTES = {("GET", "/healthz"), ("GET", "/readyz")}
# Services whose required role must get a 2xx on real fixtures (the others have only ops routes).
WITH_FIXTURES = {"device", "trading", "user", "integration"}
# Lists that must show the caller's own data (so "no other org's ids in it" is not said of an empty list).
OWN_IN_LISTS: dict[tuple[str, str, str], Callable[[OrgData], str]] = {
    ("device", "GET", "/sites"): lambda d: d.site_id,
    ("device", "GET", "/devices"): lambda d: d.device_id,
    ("device", "GET", "/latest"): lambda d: d.device_id,
    ("device", "GET", "/gateways"): lambda d: d.gateway_id,
    ("device", "GET", "/alerts"): lambda d: d.alert_id,
    ("device", "GET", "/alert-rules"): lambda d: d.alert_rule_id,
    ("trading", "GET", "/tariffs"): lambda d: d.import_tariff_id,
    ("trading", "GET", "/emergency-stops"): lambda d: d.stop_id,
    ("integration", "GET", "/connections"): lambda d: d.connection_id,
}


def routes_of(world: World, name: str) -> list[tuple[str, str]]:
    app = world.services[name].app
    found = [
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    ]
    return found + [("WS", path) for path in websocket_paths(app.routes)]


def websocket_paths(routes: list[Any], prefix: str = "") -> list[str]:
    """WebSocket routes are not in OpenAPI; walk the routers (FastAPI nests included routers)."""
    paths = []
    for route in routes:
        if hasattr(route, "original_router"):
            inner_prefix = prefix + (getattr(route.include_context, "prefix", "") or "")
            paths += websocket_paths(route.original_router.routes, inner_prefix)
        elif "WebSocket" in type(route).__name__:
            paths.append(prefix + route.path)
    return paths


def http_routes(world: World) -> list[tuple[str, str, str, Role]]:
    return [
        (name, method, path, role)
        for (name, method, path), role in REQUIRED.items()
        if role is not None and method != "WS" and name in world.services
    ]


def below(required: Role) -> list[Role]:
    return [r for r in Role if r.rank < required.rank]


# --- the checks -----------------------------------------------------------------------------------


async def test_every_route_is_in_the_table(world: World) -> None:
    missing = []
    for name in world.services:
        for method, path in routes_of(world, name):
            if (method, path) not in OPS_ROUTES and (name, method, path) not in REQUIRED:
                missing.append(f"{name} {method} {path}")
    assert not missing, "routes without an authorization requirement in tests/authz REQUIRED:\n" + "\n".join(
        missing
    )
    stale = [key for key in REQUIRED if (key[1], key[2]) not in set(routes_of(world, key[0]))]
    assert not stale, f"table entries for routes that no longer exist: {stale}"


async def test_anonymous_gets_401(world: World) -> None:
    failures = []
    for name, method, path, _ in http_routes(world):
        call = await world.call_for(name, method, path, owner=world.org_a, caller=world.org_a)
        for token in (None, "not-a-token"):
            response = await world.send(name, method, path, call, token)
            if response.status_code != 401:
                failures.append(f"{name} {method} {path} (token {token}): {response.status_code}")
    assert not failures, failures


async def test_roles_below_the_requirement_get_403(world: World) -> None:
    failures = []
    for name, method, path, required in http_routes(world):
        call = await world.call_for(name, method, path, owner=world.org_a, caller=world.org_a)
        for role in below(required):
            response = await world.send(name, method, path, call, world.token(name, role, world.org_a))
            if response.status_code != 403:
                failures.append(f"{name} {method} {path} as {role.value}: {response.status_code}")
    assert not failures, failures


async def test_the_required_role_succeeds(world: World) -> None:
    failures = []
    for name, method, path, required in http_routes(world):
        call = await world.call_for(name, method, path, owner=world.org_a, caller=world.org_a, fresh=True)
        response = await world.send(name, method, path, call, world.token(name, required, world.org_a))
        ok = response.is_success if name in WITH_FIXTURES else response.status_code not in (401, 403)
        if not ok or response.status_code >= 500:
            failures.append(
                f"{name} {method} {path} as {required.value}: {response.status_code} {response.text[:200]}"
            )
    assert not failures, failures


async def test_another_org_never_sees_the_data(world: World) -> None:
    a_ids = world.ids_of(world.org_a)
    before = await snapshot(world, world.org_a)
    failures = []
    for name, method, path, required in http_routes(world):
        for role in Role:  # every role org B could hold
            call = await world.call_for(name, method, path, owner=world.org_a, caller=world.org_b)
            response = await world.send(name, method, path, call, world.token(name, role, world.org_b))
            where = f"{name} {method} {path} as org B {role.value}"
            leaked = sorted(i for i in a_ids if i in response.text and not call.mentions({i}))  # not echoes
            if leaked:
                failures.append(f"{where} shows org A's ids {leaked}")
            if role.rank < required.rank:
                if response.status_code != 403:
                    failures.append(f"{where}: {response.status_code}, expected 403")
            elif call.mentions(a_ids):
                if response.status_code not in (403, 404):
                    failures.append(f"{where} on org A's ids: {response.status_code} {response.text[:200]}")
            elif name != "user" and not response.is_success:  # a list or a creation of org B's own
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            elif (own := OWN_IN_LISTS.get((name, method, path))) and own(
                world.data[world.org_b]
            ) not in response.text:
                failures.append(f"{where} does not list org B's own {own(world.data[world.org_b])}")
            elif response.status_code >= 500:
                failures.append(f"{where}: {response.status_code}")
    assert not failures, failures
    assert await snapshot(world, world.org_a) == before, "org B's calls changed org A's data"


async def test_org_a_ids_next_to_org_b_resources_are_refused(world: World) -> None:
    a, b = world.data[world.org_a], world.data[world.org_b]
    org_b = world.org_b
    # trading: org B's own site with org A's tariff
    response = await world.send(
        "trading",
        "PUT",
        "/sites/{site_id}/tariffs/{direction}",
        Call(path={"site_id": b.site_id, "direction": "import"}, query={"tariff_id": a.import_tariff_id}),
        world.token("trading", A, org_b),
    )
    assert response.status_code in (403, 404), response.text
    # device: org B's device list filtered by org A's site
    for role in Role:
        response = await world.send(
            "device",
            "GET",
            "/devices",
            Call(query={"site_id": a.site_id}),
            world.token("device", role, org_b),
        )
        assert response.status_code == 200 and response.json() == [], response.text
    # device: org A's Idempotency-Key on org B's own device neither replays nor reveals org A's command
    response = await world.send(
        "device",
        "POST",
        "/devices/{device_id}/commands",
        Call(path={"device_id": b.device_id}, body=COMMAND_B, headers={"Idempotency-Key": a.idempotency_key}),
        world.token("device", OP, org_b),
    )
    assert response.status_code == 201 and response.json()["id"] != a.command_id, response.text
    # trading: an emergency stop of every site of org B holds none of org A's
    before = await snapshot(world, world.org_a)
    stop = await world.api(
        "trading", "POST", "/emergency-stops", OP, org_b, json={"reason": "authz org-wide"}
    )
    try:
        assert await snapshot(world, world.org_a) == before
    finally:
        await world.api("trading", "DELETE", f"/emergency-stops/{stop['stop_id']}", OP, org_b)


COMMAND_B = {"type": "set_power", "params": {"battery_power_w": -200}}


async def test_another_org_cannot_claim_an_unconfigured_site(world: World) -> None:
    """Org A's device site is known to trading (device.registered) but has no battery there yet: org B's
    admin cannot configure it (the same 404 as an unknown site), and org A still can."""
    site = world.data[world.org_a].unclaimed_site_id
    repo = world.services["trading"].state["sites"].sites
    call = Call(path={"site_id": site}, body={"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5})
    response = await world.send(
        "trading", "PUT", "/sites/{site_id}/battery", call, world.token("trading", A, world.org_b)
    )
    assert response.status_code == 404, response.text
    unknown = str(uuid.uuid4())
    same = await world.send(
        "trading",
        "PUT",
        "/sites/{site_id}/battery",
        Call(path={"site_id": unknown}, body=call.body),
        world.token("trading", A, world.org_b),
    )
    assert same.status_code == 404
    error, unknown_error = response.json()["error"], same.json()["error"]
    assert error["code"] == unknown_error["code"] == "not_found"
    assert error["details"] == unknown_error["details"]
    assert error["message"].replace(site, "{site}") == unknown_error["message"].replace(unknown, "{site}")
    assert await repo.get(uuid.UUID(site)) is None  # nothing was written for org B
    response = await world.send(
        "trading", "PUT", "/sites/{site_id}/battery", call, world.token("trading", A, world.org_a)
    )
    assert response.status_code == 200, response.text
    configured = await repo.get(uuid.UUID(site))
    assert configured is not None and configured.org_id == world.org_a


async def test_stream_refuses_anonymous_connections(stream_url: str) -> None:
    for url, first in (
        (f"{stream_url}?token=not-a-token", None),
        (stream_url, {"hello": 1}),
        (stream_url, None),
    ):
        async with websockets.connect(url) as ws:
            if first is not None:
                await ws.send(json.dumps(first))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)  # no hello, no data: closed (after 1 s without a token)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, (url, first)


async def test_stream_gives_another_org_no_data(world: World, stream_url: str) -> None:
    from nattery_device.stream.hub import StreamPublisher

    a = world.data[world.org_a]
    async with (
        websockets.connect(f"{stream_url}?token={world.token('device', V, world.org_a)}") as mine,
        websockets.connect(stream_url) as theirs,
    ):
        await theirs.send(json.dumps({"token": world.token("device", A, world.org_b)}))
        assert (await next_message(mine)) == {"type": "hello", "org_id": str(world.org_a)}
        assert (await next_message(theirs)) == {"type": "hello", "org_id": str(world.org_b)}
        # what ingest publishes for org A's device, through the same Redis fan-out
        sample = {"device_id": a.device_id, "site_id": a.site_id, "values": {"battery_soc_pct": 42.0}}
        await StreamPublisher(world.services["device"].state["redis"]).publish(
            world.org_a, {"type": "telemetry", "samples": [sample]}
        )
        assert (await next_message(mine))["samples"][0]["device_id"] == a.device_id  # type: ignore[index]
        with pytest.raises(TimeoutError):
            got = await next_message(theirs, timeout_s=1.0)
            pytest.fail(f"org B's stream got {got}")


async def next_message(ws: websockets.ClientConnection, timeout_s: float = 5.0) -> dict[str, object]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout_s)))


@pytest.fixture(scope="module")
async def stream_url(world: World) -> Any:
    """The running device app behind a real server (WebSockets need one; the app's lifespan is the world's)."""
    from nattery_shared.testing import free_port

    port = free_port()
    config = uvicorn.Config(
        world.services["device"].asgi,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"ws://127.0.0.1:{port}/stream"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def snapshot(world: World, org: uuid.UUID) -> dict[str, Any]:
    """Org A's data as org A sees it (and trading's rows of its sites), to compare before and after."""
    data = world.data[org]
    seen: dict[str, Any] = {}
    for service, url in (
        ("device", f"/sites/{data.site_id}"),
        ("device", f"/devices/{data.device_id}"),
        ("device", f"/commands/{data.command_id}"),
        ("device", "/sites?limit=1000"),
        ("device", "/devices?limit=1000"),
        ("device", f"/gateways/{data.gateway_id}"),
        ("device", f"/alerts/{data.alert_id}"),
        ("device", f"/alert-rules/{data.alert_rule_id}"),
        ("trading", f"/sites/{data.site_id}/strategy"),
        ("trading", f"/sites/{data.site_id}/schedule"),
        ("trading", "/tariffs"),
        ("trading", "/emergency-stops?active=false"),
        ("integration", f"/connections/{data.connection_id}"),
        ("integration", "/connections?limit=1000"),
    ):
        seen[f"{service} {url}"] = await world.api(service, "GET", url, A, org)
    sites = world.services["trading"].state["sites"]
    tariffs = world.services["trading"].state["tariffs"].repo
    for site in (data.site_id, data.stopped_site_id, data.unclaimed_site_id):
        seen[f"trading site {site}"] = await sites.sites.get(uuid.UUID(site))
        seen[f"trading site {site} registered to"] = await sites.registry.org_of(uuid.UUID(site))
        async with tariffs.pool.connection() as conn:
            of_site = await TariffRepository.of_sites(conn, [uuid.UUID(site)])
        for direction in ("import", "export"):
            seen[f"trading site {site} {direction}"] = of_site.get((uuid.UUID(site), direction))
    return seen
