"""Telemetry ingest with the real broker and InfluxDB: stored with the right measurement, tags, fields and
timestamp; replays are idempotent; invalid and unroutable messages are kept and counted, never fatal;
latest values, history, statistics and CSV; org isolation of queries."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import redis.asyncio as aioredis
from device_test_helpers import Org, SiteClient, eventually, influx_count, provision, telemetry
from prometheus_client import REGISTRY

from nattery_contracts.mqtt import Telemetry
from nattery_device.ingest.lines import telemetry_line
from nattery_shared.influx import line
from nattery_shared.testing import TEST_INFLUX_DB, TEST_INFLUX_URL, TEST_REDIS_URL, TestIssuer


def test_fast_line_matches_the_shared_line_builder() -> None:
    sample = Telemetry.model_validate(
        telemetry(3, datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), a_w=1.5, b_pct=2)
    )
    tags = {"org": "o", "site": "s", "device": "d"}
    assert telemetry_line("inverter,device=d,org=o,site=s ", sample) == line(
        "inverter", tags, sample.values, sample.ts
    )


async def test_telemetry_lands_in_influx_and_replays_are_idempotent(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    for i in range(20):
        ts = start + timedelta(seconds=5 * i)
        await asyncio.to_thread(
            edge.publish, "telemetry", telemetry(i, ts, battery_soc_pct=50 + i, battery_power_w=-1000.0)
        )
    await eventually(lambda: _equals(influx_count(device_id), 20))

    async with httpx.AsyncClient(base_url=TEST_INFLUX_URL) as http:
        q = f"SELECT * FROM inverter WHERE device = '{device_id}' ORDER BY time LIMIT 1"
        row = (await http.get("/query", params={"db": TEST_INFLUX_DB, "q": q, "epoch": "ms"})).json()
    series = row["results"][0]["series"][0]
    first = dict(zip(series["columns"], series["values"][0], strict=True))
    assert first["time"] == int(start.timestamp() * 1000)
    assert first["org"] == str(org.id) and first["site"] == site["id"] and first["battery_soc_pct"] == 50

    # The bridge replays its outbox after a reconnect: same ts, same points.
    for i in range(5):
        await asyncio.to_thread(
            edge.publish,
            "telemetry",
            telemetry(i, start + timedelta(seconds=5 * i), battery_soc_pct=50 + i, battery_power_w=-1000.0),
        )
    # Another group of fields (the bridge's slow group), published after the replay, is the sentinel:
    # once it is stored and merged into the latest values, the replay has been handled too.
    slow = telemetry(20, start + timedelta(seconds=100), grid_energy_import_kwh=1234.5)
    await asyncio.to_thread(edge.publish, "telemetry", slow)

    async def merged() -> dict[str, object] | None:
        body = (await client.get(f"/devices/{device_id}/latest", headers=org.viewer)).json()
        return body if "grid_energy_import_kwh" in body["values"] else None

    latest = await eventually(merged)
    await eventually(lambda: _equals(influx_count(device_id, "grid_energy_import_kwh"), 1))
    assert await influx_count(device_id) == 20  # the replay added no point
    # The replayed (older) samples did not roll the latest values back; the slow group merged in.
    assert latest["values"]["battery_soc_pct"] == 69 and latest["seq"] == 20
    site_latest = (await client.get(f"/sites/{site['id']}/latest", headers=org.viewer)).json()
    assert [x["device_id"] for x in site_latest] == [device_id]
    assert (await client.get("/latest", headers=org.viewer)).json()[0]["device_id"] == device_id

    window = {"start": start.isoformat(), "end": (start + timedelta(minutes=5)).isoformat()}
    hist = await client.get(
        f"/devices/{device_id}/history",
        params={**window, "fields": "battery_soc_pct", "interval": "1m", "aggregate": "mean"},
        headers=org.viewer,
    )
    assert hist.status_code == 200, hist.text
    points = hist.json()["points"]
    assert [p["values"]["battery_soc_pct"] for p in points][:2] == [50 + 5.5, 50 + 15.5]
    maxes = await client.get(
        f"/devices/{device_id}/history",
        params={**window, "fields": "battery_soc_pct", "interval": "1m", "aggregate": "max"},
        headers=org.viewer,
    )
    assert maxes.json()["points"][0]["values"]["battery_soc_pct"] == 61
    raw = await client.get(f"/devices/{device_id}/history", params={**window, "limit": 3}, headers=org.viewer)
    assert len(raw.json()["points"]) == 3 and "battery_power_w" in raw.json()["fields"]
    csv = await client.get(
        f"/devices/{device_id}/history",
        params={**window, "fields": "battery_soc_pct", "format": "csv"},
        headers=org.viewer,
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "time,battery_soc_pct" and len(csv.text.splitlines()) == 21

    stats = await client.get(
        f"/devices/{device_id}/stats",
        params={**window, "fields": "battery_soc_pct,battery_power_w"},
        headers=org.viewer,
    )
    body = stats.json()["fields"]
    assert body["battery_soc_pct"]["min"] == 50 and body["battery_soc_pct"]["max"] == 69
    assert body["battery_soc_pct"]["count"] == 20
    # -1000 W held over 19 x 5 s = 95 s  ->  -1000 * 95 / 3600 Wh
    assert abs(body["battery_power_w"]["energy_kwh"] - (-1000 * 95 / 3600 / 1000)) < 1e-6

    bad = await client.get(
        f"/devices/{device_id}/history", params={**window, "fields": "x;drop"}, headers=org.viewer
    )
    assert bad.status_code == 400 and "invalid field names" in bad.text
    backwards = {"start": window["end"], "end": window["start"]}
    assert (
        await client.get(f"/devices/{device_id}/history", params=backwards, headers=org.viewer)
    ).status_code == 400

    other = Org(test_issuer)
    for path in ("latest", "history", "stats"):
        response = await client.get(
            f"/devices/{device_id}/{path}",
            params={**window, "fields": "battery_soc_pct"},
            headers=other.viewer,
        )
        assert response.status_code == 404, path
    assert (await client.get(f"/sites/{site['id']}/latest", headers=other.viewer)).status_code == 404
    assert (await client.get("/latest", headers=other.viewer)).json() == []
    edge.close()


async def test_invalid_and_unknown_messages_are_kept_and_counted(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    before = (
        REGISTRY.get_sample_value(
            "nattery_device_ingest_rejected_total", {"suffix": "telemetry", "reason": "invalid_payload"}
        )
        or 0.0
    )
    await asyncio.to_thread(edge.publish, "telemetry", b"{not json")
    await asyncio.to_thread(
        edge.publish, "telemetry", {"ts": "2026-01-01T00:00:00", "seq": 1, "values": {"a": 1}}
    )
    await asyncio.to_thread(edge.publish, "telemetry", telemetry(1), device="no-such-device")
    await asyncio.to_thread(edge.publish, "telemetry", telemetry(2))  # still consuming afterwards

    async def kept() -> list[dict[str, object]]:
        response = await client.get("/ingest/rejected", headers=org.admin)
        items: list[dict[str, object]] = response.json()
        return items if len(items) >= 3 else []

    items = await eventually(kept)
    reasons = sorted(str(i["reason"]) for i in items)
    assert reasons == ["invalid_payload", "invalid_payload", "unknown_device"]
    assert any("{not json" in str(i["payload"]) for i in items)
    assert any("timezone" in str(i["error"]) for i in items)
    after = REGISTRY.get_sample_value(
        "nattery_device_ingest_rejected_total", {"suffix": "telemetry", "reason": "invalid_payload"}
    )
    assert after is not None and after - before == 2
    await eventually(lambda: _equals(influx_count(site["device"]["id"]), 1))
    assert (await client.get("/ingest/rejected", headers=org.viewer)).status_code == 403

    # A site slug nobody provisioned (published with the service account, which the ACL allows).
    stranger = SiteClient("device-service", "nattery-dev")
    assert await asyncio.to_thread(stranger.connect)
    await asyncio.to_thread(
        stranger.client.publish(
            f"nattery/v1/{'ghost-' + org.id.hex[:8]}/inv1/telemetry", json.dumps(telemetry(1)), qos=1
        ).wait_for_publish,
        5,
    )

    async def ghost_kept() -> bool:
        r = aioredis.Redis.from_url(TEST_REDIS_URL)
        try:
            return any(
                b"ghost-" + org.id.hex[:8].encode() in item
                for item in await r.lrange("device:rejected", 0, 50)
            )
        finally:
            await r.aclose()

    await eventually(ghost_kept)
    stranger.close()
    edge.close()


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]
