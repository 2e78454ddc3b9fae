"""Devices: kinds, meter categories, validation, org isolation."""

from __future__ import annotations

import httpx
from device_test_helpers import Org, provision

from nattery_shared.testing import TestIssuer


async def test_devices_are_registered_validated_and_scoped(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org, other = Org(test_issuer), Org(test_issuer)
    site = await provision(client, org)
    site_id = site["id"]
    assert site["device"]["kind"] == "inverter" and site["device"]["status"] == "offline"

    meter = await client.post(
        f"/sites/{site_id}/devices",
        json={"slug": "grid", "kind": "meter", "meter_category": "INJ"},
        headers=org.admin,
    )
    assert meter.status_code == 201 and meter.json()["meter_category"] == "INJ"
    no_category = await client.post(
        f"/sites/{site_id}/devices", json={"slug": "m2", "kind": "meter"}, headers=org.admin
    )
    assert no_category.status_code == 422 and "meter_category" in no_category.text
    bad_kind = await client.post(
        f"/sites/{site_id}/devices", json={"slug": "x1", "kind": "toaster"}, headers=org.admin
    )
    assert bad_kind.status_code == 422
    wrong_category = await client.post(
        f"/sites/{site_id}/devices",
        json={"slug": "f1", "kind": "flow_transmitter", "meter_category": "PROD"},
        headers=org.admin,
    )
    assert wrong_category.status_code == 422
    duplicate = await client.post(
        f"/sites/{site_id}/devices", json={"slug": "grid", "kind": "inverter"}, headers=org.admin
    )
    assert duplicate.status_code == 409

    listed = (await client.get("/devices", params={"site_id": site_id}, headers=org.viewer)).json()
    assert {d["slug"] for d in listed} == {"inv1", "grid"}
    meters = (await client.get("/devices", params={"kind": "meter"}, headers=org.viewer)).json()
    assert [d["slug"] for d in meters] == ["grid"]

    assert (await client.get("/devices", headers=other.viewer)).json() == []
    assert (await client.get(f"/devices/{meter.json()['id']}", headers=other.admin)).status_code == 404
    into_other = await client.post(
        f"/sites/{site_id}/devices", json={"slug": "sneaky", "kind": "inverter"}, headers=other.admin
    )
    assert into_other.status_code == 404
    assert (await client.delete(f"/devices/{meter.json()['id']}", headers=other.admin)).status_code == 404
    assert (await client.delete(f"/devices/{meter.json()['id']}", headers=org.admin)).status_code == 204
