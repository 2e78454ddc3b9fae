"""Presence: state messages, the last will and a staleness timeout drive online/offline/degraded; each
change is stored in PostgreSQL and published as ``device.status_changed``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from device_test_helpers import (
    EventCapture,
    Org,
    SiteClient,
    app_client,
    device_settings,
    eventually,
    provision,
    telemetry,
)

from nattery_shared.testing import TestIssuer


@pytest.fixture
async def fast_client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    settings = device_settings(test_issuer, stale_after_s=2.0, presence_sweep_interval_s=0.5)
    async with app_client(settings) as client:
        yield client


async def _status(client: httpx.AsyncClient, org: Org, device_id: str) -> str:
    return str((await client.get(f"/devices/{device_id}", headers=org.viewer)).json()["status"])


async def test_state_last_will_and_staleness(fast_client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    client = fast_client
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    slug = site["mqtt"]["username"]
    async with EventCapture("device.status_changed") as events:
        edge = SiteClient(slug, site["mqtt"]["password"])
        offline = json.dumps({"status": "offline", "ts": datetime.now(UTC).isoformat()})
        edge.client.will_set(f"nattery/v1/{slug}/inv1/state", offline, qos=1)
        assert await asyncio.to_thread(edge.connect)
        state = {
            "status": "online",
            "ts": datetime.now(UTC).isoformat(),
            "firmware": "1.2.3",
            "profile": "deye",
        }
        await asyncio.to_thread(edge.publish, "state", state)
        await eventually(lambda: _is(_status(client, org, device_id), "online"))
        device = (await client.get(f"/devices/{device_id}", headers=org.viewer)).json()
        assert device["firmware"] == "1.2.3" and device["status_reason"] == "state: online"

        degraded = {"status": "degraded", "ts": datetime.now(UTC).isoformat()}
        await asyncio.to_thread(edge.publish, "state", degraded)
        await eventually(lambda: _is(_status(client, org, device_id), "degraded"))

        # The link dies without a DISCONNECT: the broker publishes the last will.
        edge.client._sock.close()  # type: ignore[attr-defined]
        await eventually(lambda: _is(_status(client, org, device_id), "offline"), timeout_s=60)
        device = (await client.get(f"/devices/{device_id}", headers=org.viewer)).json()
        assert device["status_reason"] == "last will"
        edge.client.loop_stop()

        # Telemetry brings it back; silence longer than stale_after_s takes it offline again.
        edge2 = SiteClient(slug, site["mqtt"]["password"])
        assert await asyncio.to_thread(edge2.connect)
        await asyncio.to_thread(edge2.publish, "telemetry", telemetry(1))
        await eventually(lambda: _is(_status(client, org, device_id), "online"))
        await eventually(lambda: _is(_status(client, org, device_id), "offline"), timeout_s=10)
        device = (await client.get(f"/devices/{device_id}", headers=org.viewer)).json()
        assert device["status_reason"].startswith("stale")
        edge2.close()

        expected = ["online", "degraded", "offline", "online", "offline"]
        await eventually(
            lambda: len(events.data("device.status_changed", device_id=device_id)) == len(expected)
        )
        changes = events.data("device.status_changed", device_id=device_id)
        assert [c["status"] for c in changes] == expected
        assert changes[1]["previous"] == "online" and changes[0]["org_id"] == str(org.id)


async def _is(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]
