"""Connections: CRUD scoped by org, validation per provider, secrets encrypted at rest and masked,
re-keying, audit events on RabbitMQ, and the connection test in words a user can act on."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from integration_test_helpers import Reply, ScriptedServer, integration_settings
from pydantic import SecretStr

from nattery_integration.__main__ import run_rekey
from nattery_integration.app import create_app
from nattery_integration.connections import service as connections
from nattery_integration.settings import (
    DEV_SECRETS_KEY,
    DEV_SECRETS_KEY_ID,
    IntegrationSettings,
    ProviderSettings,
    SecretsKeyring,
)
from nattery_shared.testing import TEST_PG_DSN, TEST_RABBIT_URL, TestIssuer, bearer, eventually

NEW_KEY = base64.b64encode(b"k2-connection-secrets-32-bytes!!").decode()
OCTOPUS = {"provider": "octopus", "name": "Agile C", "settings": {"region": "C"}}


@pytest.fixture
def settings(test_issuer: TestIssuer, scripted: ScriptedServer) -> IntegrationSettings:
    """Every provider points at the scripted server (as `make run` points them at replay servers)."""
    # Modo's real limit is about one call a minute; the scripted server has none
    here = ProviderSettings(
        base_url=scripted.url, max_attempts=1, rate_limit_requests=1000, rate_limit_per_s=1
    )
    return integration_settings(
        test_issuer, octopus=here, modo=here, entsoe=here, elexon=here, open_meteo=here
    )


@pytest.fixture
async def app_state(settings: IntegrationSettings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    app = create_app(settings, discover_areas=False)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://integration") as c:
            yield c, manager._state


@pytest.fixture
def api(app_state: tuple[httpx.AsyncClient, dict[str, Any]]) -> httpx.AsyncClient:
    return app_state[0]


async def raw_row(connection_id: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(TEST_PG_DSN) as conn:
        cur = await conn.execute(
            "SELECT secrets_blob, key_id, secret_names, org_id, provider FROM integration.connections WHERE id = %s",
            (connection_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return dict(zip(("blob", "key_id", "names", "org_id", "provider"), row, strict=True))


async def test_crud_masks_secrets_and_scopes_by_org(api: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    admin, viewer = bearer(test_issuer, org, "admin"), bearer(test_issuer, org, "viewer")
    body = {**OCTOPUS, "secrets": {"api_key": "sk_live_octopus_1234567890"}}
    created = await api.post("/connections", json=body, headers=admin)
    assert created.status_code == 201, created.text
    conn = created.json()
    assert conn["secrets"] == {"api_key": "********"}
    assert conn["settings"] == {"region": "C", "product_code": "AGILE-24-10-01", "export_product_code": None}
    assert "sk_live" not in created.text
    cid = conn["id"]

    listed = await api.get("/connections", headers=viewer)
    assert [c["id"] for c in listed.json()] == [cid] and "sk_live" not in listed.text
    assert (await api.get(f"/connections/{cid}", headers=viewer)).json()["secrets"] == {"api_key": "********"}
    # another org: not found, not forbidden (it does not learn the id exists), and not in its list
    for role in ("viewer", "admin"):
        headers = bearer(test_issuer, other, role)
        assert (await api.get(f"/connections/{cid}", headers=headers)).status_code == 404
        assert (await api.get("/connections", headers=headers)).json() == []
    other_admin = bearer(test_issuer, other, "admin")
    assert (
        await api.patch(f"/connections/{cid}", json={"name": "x"}, headers=other_admin)
    ).status_code == 404
    assert (await api.delete(f"/connections/{cid}", headers=other_admin)).status_code == 404
    assert (
        await api.post(f"/connections/{cid}/test", headers=bearer(test_issuer, other, "operator"))
    ).status_code == 404

    # a viewer cannot change it
    assert (await api.patch(f"/connections/{cid}", json={"name": "x"}, headers=viewer)).status_code == 403

    patched = await api.patch(
        f"/connections/{cid}", json={"settings": {"region": "A"}, "secrets": {"api_key": None}}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["settings"]["region"] == "A" and patched.json()["secrets"] == {}
    assert (await raw_row(cid))["blob"] is None

    duplicate = await api.post("/connections", json={**OCTOPUS, "settings": {"region": "B"}}, headers=admin)
    assert duplicate.status_code == 409

    assert (await api.delete(f"/connections/{cid}", headers=admin)).status_code == 204
    assert (await api.get(f"/connections/{cid}", headers=viewer)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "octopus", "name": "x", "settings": {"region": "I"}}, "settings.region"),
        ({"provider": "octopus", "name": "x", "settings": {}}, "settings.region"),
        ({"provider": "octopus", "name": "x", "settings": {"region": "C", "colour": 1}}, "settings.colour"),
        ({"provider": "modo", "name": "x"}, "secrets.token"),
        ({"provider": "modo", "name": "x", "secrets": {"token": "t", "password": "p"}}, "secrets.password"),
        (
            {
                "provider": "entsoe",
                "name": "x",
                "settings": {"bidding_zone": "NL"},
                "secrets": {"security_token": "t"},
            },
            "settings.bidding_zone",
        ),
        ({"provider": "nosuch", "name": "x"}, "provider"),
    ],
)
async def test_each_provider_validates_its_settings_and_secrets(
    api: httpx.AsyncClient, test_issuer: TestIssuer, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/connections", json=body, headers=bearer(test_issuer, uuid.uuid4(), "admin"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field), response.json()


async def test_secrets_are_encrypted_at_rest_under_the_current_key(
    api: httpx.AsyncClient, test_issuer: TestIssuer, settings: IntegrationSettings
) -> None:
    org = uuid.uuid4()
    token = f"modo-token-{uuid.uuid4().hex}"
    created = await api.post(
        "/connections",
        json={"provider": "modo", "name": "NIV", "secrets": {"token": token}},
        headers=bearer(test_issuer, org, "admin"),
    )
    cid = created.json()["id"]
    row = await raw_row(cid)
    blob = bytes(row["blob"])
    assert token.encode() not in blob and row["key_id"] == DEV_SECRETS_KEY_ID and row["names"] == ["token"]
    # AES-256-GCM under the keyring's key, bound to the row
    key = base64.b64decode(DEV_SECRETS_KEY)
    aad = f"{cid}|{org}|modo|{DEV_SECRETS_KEY_ID}".encode()
    assert json.loads(AESGCM(key).decrypt(blob[:12], blob[12:], aad)) == {"token": token}
    with pytest.raises(Exception):  # noqa: B017 - another row's associated data does not open it
        AESGCM(key).decrypt(blob[:12], blob[12:], f"{uuid.uuid4()}|{org}|modo|{DEV_SECRETS_KEY_ID}".encode())


async def test_rekey_moves_every_secret_to_the_new_key(
    api: httpx.AsyncClient,
    app_state: tuple[httpx.AsyncClient, dict[str, Any]],
    test_issuer: TestIssuer,
    settings: IntegrationSettings,
) -> None:
    org = uuid.uuid4()
    created = await api.post(
        "/connections",
        json={"provider": "modo", "name": "rekey", "secrets": {"token": "tok-before-rekey"}},
        headers=bearer(test_issuer, org, "admin"),
    )
    cid = created.json()["id"]
    both = {DEV_SECRETS_KEY_ID: SecretStr(DEV_SECRETS_KEY), "k2": SecretStr(NEW_KEY)}
    rotated = settings.model_copy(deep=True)
    rotated.integration.secrets_keyring = SecretsKeyring(current="k2", keys=both)
    try:
        assert await run_rekey(rotated) >= 1
        row = await raw_row(cid)
        assert row["key_id"] == "k2"
        assert await run_rekey(rotated) == 0  # idempotent
        only_new = rotated.model_copy(deep=True)
        only_new.integration.secrets_keyring = SecretsKeyring(current="k2", keys={"k2": SecretStr(NEW_KEY)})
        ctx = app_state[1]["ctx"]
        ctx_new = type(ctx)(
            **{**vars(ctx), "secrets": connections.SecretBox(only_new.integration.secrets_keyring)}
        )
        found = [c for c in await connections.enabled_connections(ctx_new, "modo") if str(c.id) == cid]
        assert found and found[0].secrets == {"token": "tok-before-rekey"}
    finally:  # back under the development key, for the other tests of this session
        back = settings.model_copy(deep=True)
        back.integration.secrets_keyring = SecretsKeyring(current=DEV_SECRETS_KEY_ID, keys=both)
        await run_rekey(back)
    assert (await raw_row(cid))["key_id"] == DEV_SECRETS_KEY_ID


async def test_every_change_is_audited_on_rabbitmq(api: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("nattery.events", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="audit.recorded")
        org = uuid.uuid4()
        admin = bearer(test_issuer, org, "admin")
        cid = (
            await api.post(
                "/connections",
                json={"provider": "modo", "name": "audit", "secrets": {"token": "secret-token-value"}},
                headers=admin,
            )
        ).json()["id"]
        await api.patch(f"/connections/{cid}", json={"secrets": {"token": "another-secret"}}, headers=admin)
        await api.delete(f"/connections/{cid}", headers=admin)
        received: list[dict[str, Any]] = []

        async def three() -> bool:
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                body = message.body.decode()
                assert "secret-token-value" not in body and "another-secret" not in body
                event = json.loads(body)
                if event["data"]["target"] == f"connection:{cid}":
                    received.append(event)
            return len(received) >= 3

        await eventually(three, timeout_s=20)
    finally:
        await connection.close()
    actions = [e["data"]["action"] for e in received]
    assert actions == ["connection.created", "connection.updated", "connection.deleted"]
    assert all(e["data"]["org_id"] == str(org) and e["source"] == "/services/integration" for e in received)
    assert received[1]["data"]["details"]["secrets_changed"] == ["token"]


async def test_the_connection_test_says_what_worked_and_what_did_not(
    api: httpx.AsyncClient, test_issuer: TestIssuer, scripted: ScriptedServer
) -> None:
    org = uuid.uuid4()
    admin, operator = bearer(test_issuer, org, "admin"), bearer(test_issuer, org, "operator")

    def octopus(seen: Any) -> Reply:
        if "AGILE-OUTGOING" in seen.path:
            return Reply(404, {"detail": "No EnergyProduct matches the given query."})
        return Reply(
            200, {"code": "AGILE-24-10-01", "single_register_electricity_tariffs": {"_A": {}, "_C": {}}}
        )

    scripted.responder = octopus
    cid = (
        await api.post(
            "/connections",
            json={**OCTOPUS, "settings": {"region": "C", "export_product_code": "AGILE-OUTGOING-19-05-13"}},
            headers=admin,
        )
    ).json()["id"]
    result = (await api.post(f"/connections/{cid}/test", headers=operator)).json()
    assert result["ok"] is False
    by_name = {c["name"]: c for c in result["checks"]}
    assert by_name["import product"]["ok"] is True and "region C" in by_name["import product"]["detail"]
    assert by_name["export product"]["ok"] is False
    assert "AGILE-OUTGOING-19-05-13" in by_name["export product"]["detail"]
    assert "check the connection's settings" in by_name["export product"]["detail"]
    assert scripted.seen[0].path == "/products/AGILE-24-10-01/"

    scripted.responder = lambda seen: Reply(401, {"detail": "Invalid token"})
    modo = (
        await api.post(
            "/connections", json={"provider": "modo", "name": "m", "secrets": {"token": "bad"}}, headers=admin
        )
    ).json()["id"]
    result = (await api.post(f"/connections/{modo}/test", headers=operator)).json()
    assert result["ok"] is False
    assert (
        "refused our credentials" in result["checks"][0]["detail"]
        and "token" in result["checks"][0]["detail"]
    )
    assert scripted.seen[-1].headers.get("X-Token") == "bad"

    scripted.responder = lambda seen: Reply(503)
    result = (await api.post(f"/connections/{modo}/test", headers=operator)).json()
    assert "may be down" in result["checks"][0]["detail"]
    shown = (await api.get(f"/connections/{modo}", headers=operator)).json()
    assert shown["last_test_ok"] is False and shown["last_test_at"] is not None

    scripted.responder = lambda seen: Reply(200, {"results": [{"system_price": 80.1}]})
    result = (await api.post(f"/connections/{modo}/test", headers=operator)).json()
    assert result["ok"] is True, result
