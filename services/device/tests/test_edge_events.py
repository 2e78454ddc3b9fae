"""The edge's events are stored once and read back through GET /devices/{id}/events (newest first,
paged, validated, org-scoped); an ack from a device the registry does not know is a counted dead letter."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from device_test_helpers import Org, SiteClient, eventually, provision
from prometheus_client import REGISTRY

from nattery_shared.testing import TestIssuer


async def test_edge_events_are_stored_once_and_paged(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org, other = Org(test_issuer), Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    url = f"/devices/{device_id}/events"
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    for i in [0, 1, 2, 3, 4, 4, 5]:  # 4 twice (a redelivery); 5, sent last, is the sentinel
        event = {
            "ts": (t0 + timedelta(minutes=i)).isoformat(),
            "code": f"F{i}",
            "severity": "warning",
            "message": f"fault {i}",
            "details": {"i": i},
        }
        await asyncio.to_thread(edge.publish, "event", event)

    async def stored() -> list[dict[str, object]] | None:
        body: list[dict[str, object]] = (await client.get(url, headers=org.viewer)).json()
        return body if body and body[0]["code"] == "F5" else None

    events = await eventually(stored)
    assert [e["code"] for e in events] == ["F5", "F4", "F3", "F2", "F1", "F0"]
    assert events[1]["details"] == {"i": 4} and events[1]["severity"] == "warning"

    page = (await client.get(url, params={"limit": 2, "offset": 2}, headers=org.viewer)).json()
    assert [e["code"] for e in page] == ["F3", "F2"]
    window = {
        "start": (t0 + timedelta(minutes=1)).isoformat(),
        "end": (t0 + timedelta(minutes=3)).isoformat(),
    }
    assert [e["code"] for e in (await client.get(url, params=window, headers=org.viewer)).json()] == [
        "F2",
        "F1",
    ]

    backwards = {"start": window["end"], "end": window["start"]}
    r = await client.get(url, params=backwards, headers=org.viewer)
    assert r.status_code == 400 and "end" in r.text
    r = await client.get(url, params={"limit": 0}, headers=org.viewer)
    assert r.status_code == 422 and "limit" in r.text
    r = await client.get(url, params={"offset": 2**63}, headers=org.viewer)
    assert r.status_code == 422 and "offset" in r.text
    assert (await client.get(url, headers=other.viewer)).status_code == 404
    assert (await client.get(f"/devices/{uuid.uuid4()}/events", headers=org.viewer)).status_code == 404
    edge.close()


async def test_an_ack_from_an_unknown_device_is_a_counted_dead_letter(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    labels = {"suffix": "command/ack", "reason": "unknown_device"}
    before = REGISTRY.get_sample_value("nattery_device_ingest_rejected_total", labels) or 0.0
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    ack = {"id": str(uuid.uuid4()), "status": "accepted", "ts": datetime.now(UTC).isoformat()}
    await asyncio.to_thread(edge.publish, "command/ack", ack, device="no-such-device")

    async def kept() -> list[dict[str, object]] | None:
        items: list[dict[str, object]] = (await client.get("/ingest/rejected", headers=org.admin)).json()
        return [i for i in items if str(i["topic"]).endswith("no-such-device/command/ack")] or None

    [item] = await eventually(kept)
    assert item["reason"] == "unknown_device" and ack["id"] in str(item["payload"])
    after = REGISTRY.get_sample_value("nattery_device_ingest_rejected_total", labels)
    assert after is not None and after - before == 1
    edge.close()
