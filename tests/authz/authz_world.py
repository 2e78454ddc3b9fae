"""Machinery of the authorization matrix: every service built in process against the local test servers,
two orgs, org A's real data in each service (created through the services' own APIs), and the request
each route is called with. The table and the checks are in ``test_authz_matrix.py``; ``conftest.py``
registers the ``world`` fixture.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from nattery_shared import migrations
from nattery_shared.auth import Principal, Role
from nattery_shared.settings import ServiceSettings
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, test_settings_kwargs

SERVICES = ("device", "trading", "analytics", "user", "integration")
V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN

ROOT = Path(__file__).resolve().parents[2]
PASSWD = ROOT / "var" / "mosquitto" / "passwd"  # the project Mosquitto's, like the device tests

# Per-service settings so the apps start beside other test runs without disturbing them. The device
# service provisions site credentials in the project broker's password file (every site the matrix
# makes is deleted through the API at the end) but does not signal the broker: no site of the matrix
# connects, so the broker need not load them (nor be this checkout's). Its ingest is off (no telemetry
# goes through MQTT).
SECTION_OVERRIDES: dict[str, dict[str, Any]] = {
    "device": {
        "ingest_enabled": False,
        "mqtt_client_id": f"authz-{uuid.uuid4().hex[:8]}",
        "mqtt_share_group": f"authz{uuid.uuid4().hex[:8]}",
        "mosquitto_password_file": PASSWD,
        "mosquitto_pid_file": None,
        "stream_auth_timeout_s": 1.0,
    },
    "user": {"consume_audit_events": False},
    # connection tests call Elexon: a closed local port answers at once (no internet in tests)
    "integration": {"elexon": {"base_url": "http://127.0.0.1:9/"}},
}

# Calls that destroy or lock out what they are called on: the required role gets a throwaway resource
# of its own org, so org A's fixtures stay in place for the other checks.
DESTRUCTIVE = {
    ("device", "DELETE", "/sites/{site_id}"),
    ("device", "POST", "/sites/{site_id}/credentials/revoke"),
    ("device", "DELETE", "/devices/{device_id}"),
    ("device", "POST", "/gateways/{gateway_id}/rotate"),
    ("device", "POST", "/gateways/{gateway_id}/revoke"),
    ("device", "PUT", "/alert-rules/{rule_id}"),  # resolves the rule's open alerts
    ("device", "DELETE", "/alert-rules/{rule_id}"),
    ("device", "POST", "/alerts/{alert_id}/acknowledge"),
    ("device", "POST", "/alerts/{alert_id}/resolve"),
    ("trading", "POST", "/emergency-stops"),
    ("trading", "DELETE", "/emergency-stops/{stop_id}"),
    ("integration", "DELETE", "/connections/{connection_id}"),
}

SAFETY_LIMITS = {
    "soc_min_pct": 10,
    "soc_max_pct": 95,
    "max_charge_w": 5000,
    "max_discharge_w": 5000,
    "battery_temp_min_c": 0,
    "battery_temp_max_c": 50,
    "export_limit_w": 3680,
}
BATTERY = {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5}
COMMAND = {"type": "set_power", "params": {"battery_power_w": -100}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def settings_for(service: str, issuer: TestIssuer) -> ServiceSettings:
    module = importlib.import_module(f"nattery_{service}.settings")
    cls = next(
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj is not ServiceSettings
    )
    kwargs = test_settings_kwargs(issuer)
    overrides = dict(SECTION_OVERRIDES.get(service, {}))
    section_field = cls.model_fields.get(service)
    if section_field is not None and section_field.annotation is not None:
        known = {k: v for k, v in overrides.items() if k in section_field.annotation.model_fields}
        kwargs[service] = section_field.annotation(**known)
    if service == "user":
        del kwargs["auth"]  # the user service verifies its own tokens from its key ring
    return cls(**kwargs)


@dataclass
class Service:
    name: str
    app: FastAPI
    asgi: Any  # the app with its lifespan state (what the HTTP client and a test server talk to)
    state: dict[str, Any]
    client: httpx.AsyncClient
    token: Callable[[Role, uuid.UUID, str], str]


@dataclass
class Call:
    """What a route is called with: path parameters, query, JSON body, extra headers."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def mentions(self, ids: set[str]) -> bool:
        text = f"{self.path} {self.query} {self.body} {self.headers}"
        return any(i in text for i in ids)


@dataclass
class OrgData:
    """An org's real resources in the device and trading services."""

    site_id: str = ""  # device site; the same UUID is the site in trading
    site_slug: str = ""
    device_id: str = ""
    command_id: str = ""
    idempotency_key: str = ""
    import_tariff_id: str = ""
    export_tariff_id: str = ""
    stopped_site_id: str = ""  # a trading site held by an active emergency stop
    stop_id: str = ""
    unclaimed_site_id: str = ""  # a device site (with a device) known to trading, no battery configured
    connection_id: str = ""  # an integration connection (Elexon, no secrets needed)
    gateway_id: str = ""  # a device-service HTTP ingest gateway (its key is not kept)
    alert_rule_id: str = ""  # an offline rule on the org's device (which never sends: it fires)
    alert_id: str = ""  # that rule's open alert


@dataclass
class World:
    services: dict[str, Service]
    org_a: uuid.UUID
    org_b: uuid.UUID
    user_ids: dict[tuple[uuid.UUID, Role], str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)
    data: dict[uuid.UUID, OrgData] = field(default_factory=dict)
    # (org, id, slug) of every device site made here: deleted at the end
    device_sites: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)

    def sub(self, role: Role, org: uuid.UUID) -> str:
        return self.user_ids.get((org, role), str(uuid.uuid4()))

    def token(self, service: str, role: Role, org: uuid.UUID) -> str:
        return self.services[service].token(role, org, self.sub(role, org))

    def ids_of(self, org: uuid.UUID) -> set[str]:
        """Strings that must never appear in another org's responses."""
        data = self.data.get(org, OrgData())
        ids = {str(org)} | {uid for (o, _), uid in self.user_ids.items() if o == org}
        ids |= {v for v in vars(data).values() if v}
        return ids

    async def send(
        self, service: str, method: str, path: str, call: Call, token: str | None
    ) -> httpx.Response:
        url = re.sub(r"\{(\w+)\}", lambda m: call.path[m.group(1)], path)
        headers = {**call.headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        client = self.services[service].client
        body = call.body if method in ("POST", "PUT", "PATCH") else None
        response = await client.request(method, url, headers=headers, params=call.query, json=body)
        if (service, method, path) == ("device", "POST", "/sites") and response.status_code == 201:
            self.device_sites.append((self.org_of(token), response.json()["id"], response.json()["slug"]))
        return response

    @staticmethod
    def org_of(token: str | None) -> uuid.UUID:
        """The org claim of a token (bookkeeping only, not verified)."""
        payload = (token or "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return uuid.UUID(claims["org"])

    async def api(self, service: str, method: str, url: str, role: Role, org: uuid.UUID, **kw: Any) -> Any:
        """A setup call that must succeed; returns the JSON body (None when empty)."""
        headers = {"Authorization": f"Bearer {self.token(service, role, org)}", **kw.pop("headers", {})}
        response = await self.services[service].client.request(method, url, headers=headers, **kw)
        assert response.is_success, f"{service} {method} {url}: {response.status_code} {response.text}"
        if (service, method, url) == ("device", "POST", "/sites"):
            self.device_sites.append((org, response.json()["id"], response.json()["slug"]))
        return response.json() if response.content else None

    async def call_for(
        self,
        service: str,
        method: str,
        path: str,
        *,
        owner: uuid.UUID,
        caller: uuid.UUID,
        fresh: bool = False,
    ) -> Call:
        """The call of a route with ``owner``'s resources in it, made by someone of ``caller``'s org.
        ``fresh`` gives destructive routes a throwaway resource of ``owner``."""
        names = re.findall(r"\{(\w+)\}", path)
        if service == "user":
            return Call(
                path={n: await user_path_value(self, n, owner) for n in names},
                body=user_body(self, method, path, caller),
            )
        throwaway = fresh and (service, method, path) in DESTRUCTIVE
        if service == "device":
            call = await device_call(self, method, path, owner, throwaway)
        elif service == "trading":
            call = await trading_call(self, method, path, owner, throwaway)
        elif service == "integration":
            call = await integration_call(self, method, path, owner, throwaway)
        elif service == "analytics":  # per-site reads and jobs: the owner's site (its ids must stay its own)
            site = self.data[owner].site_id
            call = Call(path={n: site if n == "site_id" else str(uuid.uuid4()) for n in names}, body={})
        else:
            call = Call(path={n: str(uuid.uuid4()) for n in names}, body={})
        call.path = {n: call.path[n] for n in names}  # only what the route takes
        return call


@pytest.fixture(scope="module")
async def world(test_issuer: TestIssuer) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        services: dict[str, Service] = {}
        for name in SERVICES:
            app_module = importlib.import_module(f"nattery_{name}.app")
            package = importlib.import_module(f"nattery_{name}")
            migrations.upgrade(
                Path(package.__file__).parent / "migrations",  # type: ignore[arg-type]
                TEST_PG_DSN,
                getattr(app_module, "SCHEMA", name),
            )
            settings = settings_for(name, test_issuer)
            app = app_module.create_app(settings)
            if name == "device":
                stack.callback(forget_device_sessions, settings)
            manager = await stack.enter_async_context(
                LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url=f"http://{name}")
            )

            def issuer_token(role: Role, org: uuid.UUID, sub: str) -> str:
                return test_issuer.token(role=role.value, org=org, sub=sub)

            services[name] = Service(name, app, manager.app, manager._state, client, issuer_token)
        world = World(services, uuid.uuid4(), uuid.uuid4())
        await seed_user_service(world)
        stack.push_async_callback(remove_device_sites, world)
        stack.push_async_callback(remove_trading_data, world)
        for org in (world.org_a, world.org_b):
            world.data[org] = OrgData()
            await seed_device(world, org)
            await seed_trading(world, org)
            world.data[org].connection_id = await integration_connection(world, org)
            await seed_integration_site(world, org)
        yield world


def forget_device_sessions(settings: Any) -> None:
    from nattery_device.mqtt.subscriber import forget_session

    for suffix in ("telemetry", "control"):
        forget_session(settings.mqtt, f"{settings.device.mqtt_client_id}-{suffix}")


async def remove_device_sites(world: World) -> None:
    """Every device site the matrix created, through the API (which removes their broker users too);
    then the same reconcile as the device tests, should another replica's credential sync have written
    one back meanwhile."""
    from nattery_device.mqtt.credentials import PasswordFile

    for org, site_id, _ in world.device_sites:
        response = await world.send(
            "device",
            "DELETE",
            "/sites/{site_id}",
            Call(path={"site_id": site_id}),
            world.token("device", A, org),
        )
        assert response.status_code in (204, 404), response.text
    PasswordFile(PASSWD, pid_file=None).reconcile({}, {slug for _, _, slug in world.device_sites})


async def remove_trading_data(world: World) -> None:
    """Trading has no routes to delete with: remove the two orgs' rows, or the periodic re-plan of every
    later test run would keep planning these sites."""
    orgs = [world.org_a, world.org_b]
    pool = world.services["trading"].state["planning"].repo.pool
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT site_id FROM sites WHERE org_id = ANY(%s)", (orgs,))
        sites = [row["site_id"] for row in await cur.fetchall()]
        for table in ("actuals", "plan_jobs", "forecasts"):
            await conn.execute(f"DELETE FROM {table} WHERE site_id = ANY(%s)", (sites,))
        for table in ("schedules", "dispatches", "emergency_stops", "sites", "tariffs", "registered_sites"):
            await conn.execute(f"DELETE FROM {table} WHERE org_id = ANY(%s)", (orgs,))


# --- org data -------------------------------------------------------------------------------------


async def seed_user_service(world: World) -> None:
    """Two real orgs with a user of each role in the user service; its tokens come from its key ring."""
    from nattery_user.accounts import service as accounts
    from nattery_user.accounts.schemas import UserCreate

    user = world.services["user"]
    ctx = user.state["ctx"]
    for org_attr in ("org_a", "org_b"):
        boot = await accounts.bootstrap_admin(
            ctx,
            org_name=f"Authz {uuid.uuid4().hex[:8]}",
            email=f"authz-admin-{uuid.uuid4().hex[:8]}@example.com",
        )
        setattr(world, org_attr, boot.org_id)
        async with ctx.pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM users WHERE email = %s", (boot.email,))
            admin_id = str((await cur.fetchone())["id"])
        world.user_ids[(boot.org_id, A)] = admin_id
        world.passwords[admin_id] = boot.password or ""
        principal = Principal(admin_id, boot.org_id, A, "seed", 0)
        for role in (OP, V):
            email = f"authz-{role.value}-{uuid.uuid4().hex[:8]}@example.com"
            password = "Matrix-Battery-Pass-2026"
            created = await accounts.create_user(
                ctx, principal, UserCreate(email=email, role=role, password=password)
            )
            world.user_ids[(boot.org_id, role)] = str(created.id)
            world.passwords[str(created.id)] = password
            world.emails[str(created.id)] = email

    def user_token(role: Role, org: uuid.UUID, sub: str) -> str:
        issued = ctx.issuer.issue(user_id=uuid.UUID(sub), org_id=org, role=role)
        return str(issued.token)

    user.token = user_token


async def user_path_value(world: World, param: str, org: uuid.UUID) -> str:
    """Real ids of ``org`` for the user service's path parameters."""
    if param == "user_id":
        return world.user_ids[(org, V)]
    if param == "token_id":
        ctx = world.services["user"].state["ctx"]
        from nattery_user.api_tokens import service as api_tokens
        from nattery_user.api_tokens.schemas import ApiTokenCreate

        principal = Principal(world.user_ids[(org, V)], org, V, "seed", 0)
        created = await api_tokens.create(ctx, principal, ApiTokenCreate(name="matrix"))
        return str(created.id)
    raise AssertionError(f"no fixture for user-service path parameter {param}")


def user_body(world: World, method: str, path: str, org: uuid.UUID) -> Any:
    if (method, path) == ("POST", "/users"):
        return {"email": f"matrix-{uuid.uuid4().hex[:8]}@example.com", "role": "viewer"}
    if (method, path) == ("PATCH", "/users/{user_id}"):
        return {"display_name": "Matrix"}
    if (method, path) == ("POST", "/api-tokens"):
        return {"name": "matrix"}
    if (method, path) == ("POST", "/me/password"):
        viewer = world.user_ids[(org, V)]
        return {"current_password": world.passwords[viewer], "new_password": world.passwords[viewer]}
    return {}


def site_body() -> dict[str, Any]:
    return {
        "slug": unique("authz"),
        "name": "Authz site",
        "timezone": "Europe/London",
        "safety_limits": SAFETY_LIMITS,
    }


async def seed_device(world: World, org: uuid.UUID) -> None:
    """A site with an inverter and a command, provisioned through the device API by the org's admin."""
    data = world.data[org]
    site = await world.api("device", "POST", "/sites", A, org, json=site_body())
    data.site_id, data.site_slug = site["id"], site["slug"]
    device = await world.api(
        "device", "POST", f"/sites/{data.site_id}/devices", A, org, json={"slug": "inv1", "kind": "inverter"}
    )
    data.device_id = device["id"]
    data.idempotency_key = unique("authz-key")
    command = await world.api(
        "device",
        "POST",
        f"/devices/{data.device_id}/commands",
        OP,
        org,
        json=COMMAND,
        headers={"Idempotency-Key": data.idempotency_key},
    )
    data.command_id = command["id"]
    data.unclaimed_site_id = await device_site(world, org)
    data.gateway_id = (
        await world.api("device", "POST", "/gateways", A, org, json={"name": "authz gateway"})
    )["id"]
    data.alert_rule_id, data.alert_id = await firing_alert(world, org, data.device_id)


# An alert rule without ids in it (ids of the owner in a body would be smuggled into org B's calls).
ALERT_RULE = {
    "name": "authz rule",
    "kind": "threshold",
    "field": "grid_power_w",
    "operator": "gt",
    "value": 1e6,
}


async def firing_alert(
    world: World, org: uuid.UUID, device_id: str, timeout_s: float = 30.0
) -> tuple[str, str]:
    """An offline rule (1 s) on a device that never sends and its alert, raised by the offline check."""
    rule = await world.api(
        "device",
        "POST",
        "/alert-rules",
        OP,
        org,
        json={"name": "authz offline", "kind": "offline", "offline_after_s": 1, "device_id": device_id},
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (page := await world.api("device", "GET", "/alerts", V, org, params={"rule_id": rule["id"]}))[
        "items"
    ]:
        assert loop.time() < deadline, f"no alert for rule {rule['id']} within {timeout_s}s"
        await asyncio.sleep(0.2)
    return str(rule["id"]), str(page["items"][0]["id"])


async def device_site(world: World, org: uuid.UUID) -> str:
    """A device site with an inverter, made through the device API: device-service publishes
    ``device.registered``, which is how trading learns the site belongs to ``org``."""
    site = await world.api("device", "POST", "/sites", A, org, json=site_body())
    await world.api(
        "device", "POST", f"/sites/{site['id']}/devices", A, org, json={"slug": "inv1", "kind": "inverter"}
    )
    return str(site["id"])


async def known_to_trading(world: World, site_id: str, org: uuid.UUID, timeout_s: float = 30.0) -> None:
    """Wait until trading has consumed the site's ``device.registered`` (device outbox relay → RabbitMQ →
    ``trading.sites``); until then trading answers 404 on the site."""
    sites = world.services["trading"].state["sites"].registry
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (got := await sites.org_of(uuid.UUID(site_id))) != org:
        assert loop.time() < deadline, f"trading did not learn site {site_id} of org {org} (has {got})"
        await asyncio.sleep(0.1)


async def seed_trading(world: World, org: uuid.UUID) -> None:
    """The device site configured in trading (battery, tariffs, strategy, a schedule, actuals), and a
    second site held by an active emergency stop, all through the trading API."""
    data = world.data[org]
    site = data.site_id
    await known_to_trading(world, site, org)
    await known_to_trading(world, data.unclaimed_site_id, org)
    await world.api("trading", "PUT", f"/sites/{site}/battery", A, org, json=BATTERY)
    for direction in ("import", "export"):
        tariff = await world.api("trading", "POST", "/tariffs", A, org, json=tariff_body(direction))
        setattr(data, f"{direction}_tariff_id", tariff["tariff_id"])
        await world.api(
            "trading",
            "PUT",
            f"/sites/{site}/tariffs/{direction}",
            A,
            org,
            params={"tariff_id": tariff["tariff_id"]},
        )
    await world.api("trading", "PUT", f"/sites/{site}/strategy", OP, org, json=strategy_body())
    await world.api("trading", "POST", f"/sites/{site}/plan", OP, org)
    await world.api("trading", "POST", f"/sites/{site}/actuals", OP, org, json=actuals_body())
    data.stopped_site_id, data.stop_id = await stopped_site(world, org)


async def trading_site(world: World, org: uuid.UUID) -> str:
    site = await device_site(world, org)
    await known_to_trading(world, site, org)
    await world.api("trading", "PUT", f"/sites/{site}/battery", A, org, json=BATTERY)
    return site


async def stopped_site(world: World, org: uuid.UUID) -> tuple[str, str]:
    site = await trading_site(world, org)
    stop = await world.api(
        "trading", "POST", "/emergency-stops", OP, org, json={"site_id": site, "reason": "authz matrix"}
    )
    return site, stop["stop_id"]


def tariff_body(direction: str) -> dict[str, Any]:
    return {"name": f"authz {direction}", "direction": direction, "kind": "fixed", "fixed_p_per_kwh": 20}


def strategy_body() -> dict[str, Any]:
    return {"kind": "arbitrage", "reserve_soc_pct": 20}


def this_slot() -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=30 if now.minute >= 30 else 0, second=0, microsecond=0)


def actuals_body() -> list[dict[str, Any]]:
    return [{"start_at": this_slot().isoformat(), "battery_power_kw": 1.0, "soc_pct": 50}]


# --- the call of each route -----------------------------------------------------------------------


async def device_call(world: World, method: str, path: str, owner: uuid.UUID, fresh: bool) -> Call:
    data = world.data[owner]
    call = Call(
        path={
            "site_id": data.site_id,
            "device_id": data.device_id,
            "command_id": data.command_id,
            "gateway_id": data.gateway_id,
            "rule_id": data.alert_rule_id,
            "alert_id": data.alert_id,
        }
    )
    if fresh and "{site_id}" in path:
        site = await world.api("device", "POST", "/sites", A, owner, json=site_body())
        call.path["site_id"] = site["id"]
    elif fresh and "{device_id}" in path:
        device = await world.api(
            "device",
            "POST",
            f"/sites/{data.site_id}/devices",
            A,
            owner,
            json={"slug": unique("d"), "kind": "meter", "meter_category": "CONS"},
        )
        call.path["device_id"] = device["id"]
    elif fresh and "{gateway_id}" in path:
        gateway = await world.api("device", "POST", "/gateways", A, owner, json={"name": "authz gateway"})
        call.path["gateway_id"] = gateway["id"]
    elif fresh and "{rule_id}" in path:
        call.path["rule_id"] = (
            await world.api("device", "POST", "/alert-rules", OP, owner, json=ALERT_RULE)
        )["id"]
    elif fresh and "{alert_id}" in path:
        call.path["alert_id"] = (await firing_alert(world, owner, data.device_id))[1]
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": now.isoformat()}
    match method, path:
        case "POST", "/sites":
            call.body = site_body()
        case "PATCH", "/sites/{site_id}":
            call.body = {"name": "Authz site (renamed)"}
        case "POST", "/sites/{site_id}/devices":
            call.body = {"slug": unique("d"), "kind": "meter", "meter_category": "CONS"}
        case "PATCH", "/devices/{device_id}":
            call.body = {"serial": "AUTHZ-1"}
        case "POST", "/gateways":
            call.body = {"name": "authz gateway"}
        case ("POST", "/alert-rules") | ("PUT", "/alert-rules/{rule_id}"):
            call.body = ALERT_RULE
        case "POST", "/devices/{device_id}/commands":
            call.body = COMMAND  # with the owner's key: a replay for the owner, nothing for anyone else
            call.headers = {"Idempotency-Key": data.idempotency_key}
        case "GET", "/devices/{device_id}/history":
            call.query = window
        case "GET", "/devices/{device_id}/stats":
            call.query = {**window, "fields": "battery_soc_pct"}
        case _:
            call.body = {}
    return call


async def trading_call(world: World, method: str, path: str, owner: uuid.UUID, fresh: bool) -> Call:
    data = world.data[owner]
    call = Call(path={"site_id": data.site_id, "direction": "import", "stop_id": data.stop_id})
    match method, path:
        case "PUT", "/sites/{site_id}/battery":
            call.body = BATTERY
        case "PUT", "/sites/{site_id}/strategy":
            call.body = strategy_body()
        case "POST", "/tariffs":
            call.body = tariff_body("export")
        case "PUT", "/sites/{site_id}/tariffs/{direction}":
            call.query = {"tariff_id": data.import_tariff_id}
        case "POST", "/sites/{site_id}/actuals":
            call.body = actuals_body()
        case "GET", "/sites/{site_id}/schedule/compare":
            start = this_slot()
            call.query = {
                "from": (start - timedelta(hours=1)).isoformat(),
                "to": (start + timedelta(hours=2)).isoformat(),
            }
        case "POST", "/emergency-stops":
            site = await trading_site(world, owner) if fresh else data.site_id
            call.body = {"site_id": site, "reason": "authz matrix"}
        case "DELETE", "/emergency-stops/{stop_id}" if fresh:
            call.path["stop_id"] = (await stopped_site(world, owner))[1]
        case "POST", "/optimiser/plan":
            call.body = {
                "start": "2026-06-01T00:00:00Z",
                "import_price_p_per_kwh": [20] * 4 + [40] * 4,
                "export_price_p_per_kwh": [5] * 8,
                "load_kw": [1] * 8,
                "pv_kw": [0] * 8,
                "initial_soc_pct": 50,
                "battery": BATTERY,
            }
        case _:
            call.body = {}
    return call


async def integration_connection(world: World, org: uuid.UUID) -> str:
    """An Elexon connection of ``org``, made through the integration API."""
    body = {"provider": "elexon", "name": unique("authz")}
    return str((await world.api("integration", "POST", "/connections", A, org, json=body))["id"])


PV_ARRAY = {"latitude": 51.75, "longitude": -1.25, "kwp": 5.0, "tilt_deg": 35, "azimuth_deg": 180}


async def seed_integration_site(world: World, org: uuid.UUID, timeout_s: float = 30.0) -> None:
    """The device site's PV array, once the integration service has consumed its ``device.registered``."""
    from nattery_integration.sites.repository import SitesRepository

    sites = SitesRepository(world.services["integration"].state["ctx"].pool)
    site = world.data[org].site_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await sites.org_of(uuid.UUID(site)) != org:
        assert loop.time() < deadline, f"integration did not learn site {site} of org {org}"
        await asyncio.sleep(0.1)
    await world.api("integration", "PUT", f"/sites/{site}/pv-array", A, org, json=PV_ARRAY)


async def integration_call(world: World, method: str, path: str, owner: uuid.UUID, fresh: bool) -> Call:
    data = world.data[owner]
    call = Call(path={"connection_id": data.connection_id, "provider": "elexon", "site_id": data.site_id})
    if path == "/markets/prices":
        call.query = {"market": "octopus-agile", "region": "J"}
    if fresh and "{connection_id}" in path:
        call.path["connection_id"] = await integration_connection(world, owner)
    match method, path:
        case "POST", "/connections":
            call.body = {"provider": "elexon", "name": unique("authz")}
        case "PATCH", "/connections/{connection_id}":
            call.body = {"enabled": True}
        case "PUT", "/sites/{site_id}/pv-array":
            call.body = PV_ARRAY
        case _:
            call.body = {}
    return call
