"""Sites: provisioning creates working MQTT credentials, revocation locks the site out, validation,
roles and org isolation."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from device_test_helpers import LIMITS, Org, SiteClient, provision, unique

from nattery_shared.testing import TestIssuer


async def test_provisioned_site_connects_and_is_locked_out_after_revocation(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    creds = site["mqtt"]
    assert creds["username"] == site["slug"] and len(creds["password"]) >= 24
    assert "mqtt" not in (await client.get(f"/sites/{site['id']}", headers=org.viewer)).json()  # shown once

    wrong = SiteClient(creds["username"], "not-the-password")
    assert not await asyncio.to_thread(wrong.connect, retry_s=0)
    wrong.close()

    live = SiteClient(creds["username"], creds["password"])
    assert await asyncio.to_thread(live.connect)

    response = await client.post(f"/sites/{site['id']}/credentials/revoke", headers=org.admin)
    assert response.status_code == 200 and response.json()["mqtt_revoked"] is True
    # Mosquitto re-checks connected clients on SIGHUP: the open connection is dropped...
    assert await asyncio.to_thread(live.disconnected.wait, 5), "existing connection was not dropped"
    live.close()
    # ...and a reconnect is refused.
    again = SiteClient(creds["username"], creds["password"])
    assert not await asyncio.to_thread(again.connect, retry_s=0)
    again.close()

    rotated = (await client.post(f"/sites/{site['id']}/credentials/rotate", headers=org.admin)).json()
    back = SiteClient(creds["username"], rotated["mqtt"]["password"])
    assert await asyncio.to_thread(back.connect)
    back.close()
    assert (await client.delete(f"/sites/{site['id']}", headers=org.admin)).status_code == 204


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA timezone"),
        ({"safety_limits": {**LIMITS, "soc_min_pct": 96}}, "soc_min_pct must be below soc_max_pct"),
        ({"safety_limits": {**LIMITS, "max_charge_w": -1}}, "max_charge_w"),
        ({"latitude": 91}, "latitude"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_invalid_sites_get_422_with_a_clear_message(
    client: httpx.AsyncClient, test_issuer: TestIssuer, change: dict[str, object], message: str
) -> None:
    org = Org(test_issuer)
    body = {"slug": unique("site"), "name": "x", "timezone": "UTC", "safety_limits": LIMITS, **change}
    response = await client.post("/sites", json=body, headers=org.admin)
    assert response.status_code == 422
    assert message in response.text


async def test_roles_conflicts_and_org_isolation(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org, other = Org(test_issuer), Org(test_issuer)
    body = {"slug": unique("site"), "name": "x", "timezone": "UTC", "safety_limits": LIMITS}
    assert (await client.post("/sites", json=body, headers=org.operator)).status_code == 403
    assert (await client.post("/sites", json=body, headers=org.viewer)).status_code == 403
    created = await client.post("/sites", json=body, headers=org.admin)
    assert created.status_code == 201
    site_id = created.json()["id"]
    assert (
        await client.post("/sites", json=body, headers=other.admin)
    ).status_code == 409  # slug is fleet-wide

    assert (await client.get(f"/sites/{site_id}", headers=org.viewer)).status_code == 200
    assert (await client.get(f"/sites/{site_id}", headers=other.admin)).status_code == 404
    assert (await client.get("/sites", headers=other.viewer)).json() == []
    assert (
        await client.patch(f"/sites/{site_id}", json={"name": "y"}, headers=other.admin)
    ).status_code == 404
    assert (await client.post(f"/sites/{site_id}/credentials/revoke", headers=other.admin)).status_code == 404
    assert (await client.delete(f"/sites/{site_id}", headers=other.admin)).status_code == 404

    new_limits = {**LIMITS, "max_discharge_w": 3000}
    patched = await client.patch(f"/sites/{site_id}", json={"safety_limits": new_limits}, headers=org.admin)
    assert patched.status_code == 200 and patched.json()["safety_limits"]["max_discharge_w"] == 3000
    assert (
        await client.patch(f"/sites/{site_id}", json={"name": "z"}, headers=org.operator)
    ).status_code == 403
    assert (await client.delete(f"/sites/{site_id}", headers=org.admin)).status_code == 204
