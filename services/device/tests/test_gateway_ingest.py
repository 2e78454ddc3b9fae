"""Gateway HTTP ingest (POST /ingest with X-API-Key) against the real PostgreSQL, Redis and InfluxDB:
keys created, rotated and revoked by an org admin; readings stored through the MQTT telemetry pipeline
(InfluxDB, latest values) and queryable in the history API; whole-batch rejection; replays stored once;
IP allow-list; org and site scope."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from device_test_helpers import Org, app_client, device_settings, eventually, influx_count, provision

from nattery_device.gateways.service import client_address
from nattery_shared.testing import TestIssuer


def readings(device_id: str, start: datetime, n: int, **extra: float) -> list[dict[str, Any]]:
    return [
        {
            "device_id": device_id,
            "ts": (start + timedelta(seconds=10 * i)).isoformat(),
            "values": {"battery_soc_pct": 40.0 + i, **extra},
        }
        for i in range(n)
    ]


async def new_gateway(client: httpx.AsyncClient, org: Org, **body: Any) -> dict[str, Any]:
    response = await client.post("/gateways", json={"name": "teltonika-1", **body}, headers=org.admin)
    assert response.status_code == 201, response.text
    gateway: dict[str, Any] = response.json()
    assert gateway["api_key"].startswith(gateway["key_hint"])
    return gateway


async def post(
    client: httpx.AsyncClient, key: str | None, batch: dict[str, Any], **headers: str
) -> httpx.Response:
    if key is not None:
        headers["X-API-Key"] = key
    return await client.post("/ingest", json=batch, headers=headers)


def start_time() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


async def test_good_key_stores_readings_queryable_in_history_and_latest(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    gateway = await new_gateway(client, org)
    start = start_time()

    response = await post(
        client, gateway["api_key"], {"batch_id": "b-1", "readings": readings(device_id, start, 5)}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"batch_id": "b-1", "stored": 5, "duplicate": False}
    # Answered once stored: the points are in InfluxDB already.
    assert await influx_count(device_id) == 5

    window = {"start": start.isoformat(), "end": (start + timedelta(minutes=1)).isoformat()}
    hist = await client.get(
        f"/devices/{device_id}/history", params={**window, "fields": "battery_soc_pct"}, headers=org.viewer
    )
    assert hist.status_code == 200, hist.text
    assert [p["values"]["battery_soc_pct"] for p in hist.json()["points"]] == [40.0, 41.0, 42.0, 43.0, 44.0]

    # The same pipeline as MQTT telemetry: latest values and last seen follow.
    async def latest() -> dict[str, Any] | None:
        body = (await client.get(f"/devices/{device_id}/latest", headers=org.viewer)).json()
        return body if body.get("values", {}).get("battery_soc_pct") == 44.0 else None

    await eventually(latest)

    # The key is shown once: listings show its hint only; last use recorded.
    listed = (await client.get("/gateways", headers=org.admin)).json()
    assert [g["id"] for g in listed] == [gateway["id"]]
    assert "api_key" not in listed[0] and listed[0]["last_used_at"] is not None
    assert gateway["api_key"] not in (await client.get(f"/gateways/{gateway['id']}", headers=org.admin)).text


async def test_replayed_batch_is_stored_once(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    key = (await new_gateway(client, org))["api_key"]
    start = start_time()
    batch = {"batch_id": "replay-1", "readings": readings(device_id, start, 4)}

    # Two copies at once (a gateway retrying on a timeout): one stores, the other waits and is a duplicate.
    first, second = await asyncio.gather(post(client, key, batch), post(client, key, batch))
    assert sorted((r.status_code, r.json()["stored"], r.json()["duplicate"]) for r in (first, second)) == [
        (200, 0, True),
        (200, 4, False),
    ]
    # A later replay of the batch id, even with other values, stores nothing.
    changed = {"batch_id": "replay-1", "readings": readings(device_id, start + timedelta(seconds=5), 4)}
    replay = await post(client, key, changed)
    assert replay.status_code == 200 and replay.json() == {
        "batch_id": "replay-1",
        "stored": 0,
        "duplicate": True,
    }
    assert await influx_count(device_id) == 4

    # Batch ids are per gateway: another gateway's "replay-1" is its own batch.
    other_key = (await new_gateway(client, org))["api_key"]
    again = await post(client, other_key, changed)
    assert again.json()["stored"] == 4 and await influx_count(device_id) == 8


async def test_bad_missing_revoked_and_rotated_keys(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    gateway = await new_gateway(client, org)
    key = gateway["api_key"]
    start = start_time()

    def batch(n: int) -> dict[str, Any]:
        return {"batch_id": f"k-{n}", "readings": readings(device_id, start + timedelta(minutes=n), 1)}

    assert (await post(client, None, batch(1))).status_code == 401
    assert (await post(client, "ngw_" + "x" * 43, batch(1))).status_code == 401
    assert (await post(client, key + "x", batch(1))).status_code == 401
    # A user's bearer token is not a gateway key.
    assert (await client.post("/ingest", json=batch(1), headers=org.admin)).status_code == 401
    assert (await post(client, key, batch(1))).status_code == 200

    rotated = await client.post(f"/gateways/{gateway['id']}/rotate", headers=org.admin)
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["api_key"]
    assert new_key != key and rotated.json()["previous_key_valid_until"] is None
    assert (await post(client, key, batch(2))).status_code == 401
    assert (await post(client, new_key, batch(2))).status_code == 200

    # With an overlap the old key keeps working until it ends.
    overlapped = await client.post(
        f"/gateways/{gateway['id']}/rotate", json={"overlap_s": 600}, headers=org.admin
    )
    assert overlapped.status_code == 200 and overlapped.json()["previous_key_valid_until"] is not None
    newest = overlapped.json()["api_key"]
    assert (await post(client, new_key, batch(3))).status_code == 200
    assert (await post(client, newest, batch(4))).status_code == 200

    revoked = await client.post(f"/gateways/{gateway['id']}/revoke", headers=org.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    for k in (new_key, newest):  # the overlap ends with the revocation too
        response = await post(client, k, batch(5))
        assert response.status_code == 401, response.text
    assert (await client.post(f"/gateways/{gateway['id']}/rotate", headers=org.admin)).status_code == 403
    assert await influx_count(device_id) == 4

    # Only admins manage keys; another org's admin does not see them.
    assert (await client.post("/gateways", json={"name": "x"}, headers=org.operator)).status_code == 403
    other = Org(test_issuer)
    assert (await client.get(f"/gateways/{gateway['id']}", headers=other.admin)).status_code == 404
    assert (await client.post(f"/gateways/{gateway['id']}/revoke", headers=other.admin)).status_code == 404
    assert (await client.get("/gateways", headers=other.admin)).json() == []


async def test_invalid_reading_rejects_the_whole_batch_naming_the_field(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    key = (await new_gateway(client, org))["api_key"]
    start = start_time()

    bad = readings(device_id, start, 3)
    bad[1]["values"]["Bad-Name"] = 1.0
    response = await post(client, key, {"batch_id": "bad-1", "readings": bad})
    assert response.status_code == 422, response.text
    locs = [d["loc"] for d in response.json()["error"]["details"]]
    assert ["body", "readings", 1, "values", "Bad-Name", "[key]"] in locs, locs

    naive = readings(device_id, start, 2)
    naive[0]["ts"] = "2026-01-01T00:00:00"
    response = await post(client, key, {"batch_id": "bad-2", "readings": naive})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "readings", 0, "ts"]

    future = readings(device_id, datetime.now(UTC) + timedelta(hours=1), 1)
    response = await post(client, key, {"batch_id": "bad-3", "readings": future})
    assert response.status_code == 422 and "future" in response.text

    unknown = readings(device_id, start, 2)
    unknown[1]["device_id"] = str(uuid.uuid4())
    response = await post(client, key, {"batch_id": "bad-4", "readings": unknown})
    assert response.status_code == 404 and "readings[1].device_id" in response.text

    assert await influx_count(device_id) == 0
    # A refused batch was not marked: corrected, the same batch id is stored.
    response = await post(client, key, {"batch_id": "bad-1", "readings": readings(device_id, start, 3)})
    assert response.json() == {"batch_id": "bad-1", "stored": 3, "duplicate": False}


async def test_another_orgs_key_cannot_write_to_this_orgs_device(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org, other = Org(test_issuer), Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    foreign_key = (await new_gateway(client, other))["api_key"]
    response = await post(
        client, foreign_key, {"batch_id": "x-1", "readings": readings(device_id, start_time(), 2)}
    )
    assert response.status_code == 404, response.text
    assert await influx_count(device_id) == 0


async def test_key_limited_to_sites(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    site_a, site_b = await provision(client, org), await provision(client, org)
    key = (await new_gateway(client, org, site_ids=[site_a["id"]]))["api_key"]
    start = start_time()
    mixed = readings(site_a["device"]["id"], start, 1) + readings(site_b["device"]["id"], start, 1)
    response = await post(client, key, {"batch_id": "s-1", "readings": mixed})
    assert response.status_code == 403 and "readings[1].device_id" in response.text
    assert await influx_count(site_a["device"]["id"]) == 0
    ok = await post(client, key, {"batch_id": "s-2", "readings": mixed[:1]})
    assert ok.status_code == 200 and ok.json()["stored"] == 1

    foreign_site = await provision(client, Org(test_issuer))
    response = await client.post(
        "/gateways", json={"name": "x", "site_ids": [foreign_site["id"]]}, headers=org.admin
    )
    assert response.status_code == 422 and "site_ids[0]" in response.text


async def test_ip_allow_list(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    key = (await new_gateway(client, org, allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"]))["api_key"]
    start = start_time()

    def batch(n: int) -> dict[str, Any]:
        return {"batch_id": f"ip-{n}", "readings": readings(device_id, start + timedelta(minutes=n), 1)}

    # The test client connects from 127.0.0.1 like the local nginx, which sets X-Real-IP.
    assert (await post(client, key, batch(1), **{"X-Real-IP": "203.0.113.7"})).status_code == 200
    assert (await post(client, key, batch(2), **{"X-Real-IP": "2001:db8::1"})).status_code == 200
    refused = await post(client, key, batch(3), **{"X-Real-IP": "198.51.100.7"})
    assert refused.status_code == 403, refused.text
    # X-Forwarded-For is the client's to write (nginx appends to it): never believed.
    assert (await post(client, key, batch(4), **{"X-Forwarded-For": "203.0.113.7"})).status_code == 403
    assert (await post(client, key, batch(5))).status_code == 403  # 127.0.0.1 itself is not allowed
    assert await influx_count(device_id) == 2

    bad = await client.post(
        "/gateways", json={"name": "x", "allowed_cidrs": ["10.0.0.1/8"]}, headers=org.admin
    )
    assert bad.status_code == 422 and "allowed_cidrs" in bad.text


def test_client_address_believes_x_real_ip_only_from_a_trusted_proxy() -> None:
    assert str(client_address("127.0.0.1", "203.0.113.7")) == "203.0.113.7"
    assert str(client_address("172.18.0.5", "203.0.113.7")) == "203.0.113.7"  # compose network
    assert str(client_address("198.51.100.9", "203.0.113.7")) == "198.51.100.9"  # direct caller
    assert str(client_address("127.0.0.1", None)) == "127.0.0.1"
    assert client_address("127.0.0.1", "not-an-address") is None


async def test_not_stored_is_503_and_leaves_the_batch_id_free(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    """An instance without ingest cannot store: 503, nothing written, and the batch id is not marked
    (the marking rolls back with it), so the gateway's retry on an instance that can is stored."""
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    key = (await new_gateway(client, org))["api_key"]
    batch = {"batch_id": "retry-1", "readings": readings(device_id, start_time(), 2)}
    async with app_client(device_settings(test_issuer, ingest_enabled=False)) as no_ingest:
        response = await post(no_ingest, key, batch)
        assert response.status_code == 503, response.text
    assert await influx_count(device_id) == 0
    retried = await post(client, key, batch)
    assert retried.json() == {"batch_id": "retry-1", "stored": 2, "duplicate": False}
