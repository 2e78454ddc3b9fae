"""The one-minute history rollup (telemetry/rollup.py): late points' minutes are found from the line
protocol, and history read through the rollup equals the same aggregation of the raw points (whole
minutes from the rollup, a partial first minute and the last minutes from the raw points)."""

from __future__ import annotations

import gzip
import random
import statistics
from datetime import UTC, datetime, timedelta

import httpx
from device_test_helpers import Org, provision

from nattery_device.ingest.lines import ts_ns
from nattery_device.telemetry.repository import reroll_statement
from nattery_device.telemetry.rollup import late_ranges
from nattery_shared.testing import TEST_INFLUX_DB, TEST_INFLUX_URL, TestIssuer

MINUTE_NS = 60_000_000_000


def test_late_ranges_cover_whole_minutes_of_old_points_only() -> None:
    now = 1_000 * MINUTE_NS
    lines = [
        f"inverter,device=d1,org=o,site=s a=1 {now - 10 * MINUTE_NS + 5}",
        f"inverter,device=d1,org=o,site=s a=2 {now - 7 * MINUTE_NS + 59_000_000_000}",
        f"inverter,device=d2,org=o,site=s a=3 {now - 1}",  # recent: the continuous query has it
        f"meter,device=d3,org=o,site=s b=4 {now - 3 * MINUTE_NS}",
    ]
    assert late_ranges(lines, now - MINUTE_NS) == {
        ("inverter", "d1"): (now - 10 * MINUTE_NS, now - 6 * MINUTE_NS),
        ("meter", "d3"): (now - 3 * MINUTE_NS, now - 2 * MINUTE_NS),
    }


async def test_history_from_the_rollup_equals_the_raw_aggregation(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device = site["device"]["id"]
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    rng = random.Random(7)
    points = [(start + timedelta(seconds=5 * i), rng.uniform(-5000, 5000)) for i in range(30 * 12 + 30)]
    points = [(t, v) for t, v in points if t < now]
    lines = [
        f"inverter,device={device},org={org.id},site={site['id']} battery_power_w={v} {ts_ns(t)}"
        for t, v in points
    ]
    async with httpx.AsyncClient(base_url=TEST_INFLUX_URL, timeout=30) as http:
        body = gzip.compress("\n".join(lines).encode())
        response = await http.post(
            "/write", params={"db": TEST_INFLUX_DB}, content=body, headers={"Content-Encoding": "gzip"}
        )
        response.raise_for_status()
        # What the ingest writer runs for late points (these were written all at once, minutes late).
        statement = reroll_statement(TEST_INFLUX_DB, "inverter", device, ts_ns(start), ts_ns(now) + MINUTE_NS)
        (await http.post("/query", params={"q": statement})).raise_for_status()

    begin = start + timedelta(seconds=20)  # a partial first minute: from the raw points
    for interval_s, interval in ((60, "1m"), (300, "5m")):
        for aggregate, fn in (("mean", statistics.fmean), ("min", min), ("max", max)):
            response = await client.get(
                f"/devices/{device}/history",
                params={
                    "start": begin.isoformat(),
                    "end": now.isoformat(),
                    "fields": "battery_power_w",
                    "interval": interval,
                    "aggregate": aggregate,
                },
                headers=org.viewer,
            )
            assert response.status_code == 200, response.text
            got = {p["time"]: p["values"]["battery_power_w"] for p in response.json()["points"]}
            buckets: dict[int, list[float]] = {}
            for t, v in points:
                if begin <= t:
                    epoch_s = int(t.timestamp())
                    buckets.setdefault(epoch_s - epoch_s % interval_s, []).append(v)
            expected = {
                datetime.fromtimestamp(b, UTC).isoformat().replace("+00:00", "Z"): fn(vs)
                for b, vs in buckets.items()
            }
            assert got.keys() == expected.keys(), (interval, aggregate)
            for key, value in expected.items():
                assert abs(got[key] - value) < 1e-6, (interval, aggregate, key, got[key], value)
