"""``site.state_measured``: each site's measured state once per interval, from real MQTT telemetry, and
one event per site per interval when the telemetry is split over two replicas."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from device_test_helpers import (
    EventCapture,
    Org,
    SiteClient,
    app_client,
    device_settings,
    eventually,
    provision,
)
from redis.asyncio import Redis

from nattery_contracts.events import SiteStateMeasured
from nattery_contracts.mqtt import Telemetry
from nattery_device.devices.registry import DeviceEntry
from nattery_device.devices.schemas import DeviceKind
from nattery_device.site_state.service import SiteStateAggregator
from nattery_shared.testing import TEST_REDIS_URL, TestIssuer


async def test_real_telemetry_becomes_one_site_state_per_interval(test_issuer: TestIssuer) -> None:
    settings = device_settings(test_issuer, site_state_interval_s=2.0)
    async with EventCapture("site.state_measured") as capture, app_client(settings) as client:
        org = Org(test_issuer)
        site = await provision(client, org)
        mqtt = SiteClient(site["slug"], site["mqtt"]["password"])
        assert mqtt.connect()
        try:
            seq = 0

            async def states() -> list[dict[str, Any]]:
                nonlocal seq
                seq += 1  # keep the site reporting until the summaries arrive
                mqtt.publish(
                    "telemetry",
                    {
                        "ts": datetime.now(UTC).isoformat(),
                        "seq": seq,
                        "values": {
                            "battery_soc_pct": 40.0 + seq * 0.01,
                            "battery_power_w": -1000.0 if seq % 2 else -2000.0,
                            "load_power_w": 500.0,
                            "pv_power_w": 0.0,
                            "grid_power_w": 1500.0,
                        },
                    },
                )
                found = capture.data("site.state_measured", site_id=site["id"])
                return found if len(found) >= 2 else []

            got = await eventually(states, timeout_s=30, interval_s=0.2)
        finally:
            mqtt.close()
    state = SiteStateMeasured.model_validate(got[-1])
    assert state.org_id == org.id and state.devices == 1 and state.samples >= 2
    assert state.soc_pct is not None and 40.0 < state.soc_pct < 41.0
    assert state.battery_power_w is not None and -2000.0 <= state.battery_power_w <= -1000.0
    assert state.load_power_w == 500.0 and state.grid_power_w is not None
    assert state.window_end - state.window_start == timedelta(seconds=2)
    assert state.window_start <= state.measured_at < state.window_end + timedelta(seconds=2)
    windows = [(d["window_start"], d["site_id"]) for d in got]
    assert len(windows) == len(set(windows)), "one event per site and interval"


class _Bus:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, event: Any) -> None:
        self.events.append(event)


def _entry(site_id: uuid.UUID, org_id: uuid.UUID) -> DeviceEntry:
    device = uuid.uuid4()
    return DeviceEntry(device, org_id, site_id, "s", "inv", DeviceKind.INVERTER, "inverter", "inverter ")


async def test_two_replicas_make_one_state_with_exact_means() -> None:
    """Each replica sees part of a site's samples (shared subscription): their sums meet in Redis and
    one replica publishes one event per site, with means over all samples of each device, summed."""
    redis = Redis.from_url(TEST_REDIS_URL)
    org, site = uuid.uuid4(), uuid.uuid4()
    inv1, inv2 = _entry(site, org), _entry(site, org)
    bus_a, bus_b = _Bus(), _Bus()
    interval = 3600.0  # one bucket for the whole test; flushed by hand
    a = SiteStateAggregator(redis, bus_a, interval_s=interval)  # type: ignore[arg-type]
    b = SiteStateAggregator(redis, bus_b, interval_s=interval)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    t = now.timestamp()

    def sample(seconds: float, **values: float) -> Telemetry:
        return Telemetry(ts=now + timedelta(seconds=seconds), seq=1, values=values)

    try:
        a.record([(inv1, sample(-3, battery_power_w=-1000, battery_soc_pct=50.0))], t)
        b.record([(inv1, sample(-2, battery_power_w=-3000, battery_soc_pct=51.0))], t)
        a.record([(inv1, sample(-1, load_power_w=400))], t)  # newer, no SOC: the SOC stays 51
        b.record([(inv2, sample(-2, battery_power_w=500, battery_soc_pct=71.0))], t)
        a.record([(inv2, sample(-3600 * 3, battery_power_w=9999))], t)  # a replayed buffer: not now
        bucket = a._bucket
        assert bucket == b._bucket
        for agg in (a, b):
            agg._roll()
            for task in list(agg._background):
                await task
        published = [await a.publish(bucket), await b.publish(bucket)]
        assert sorted(published) == [0, 1]
        (event,) = bus_a.events + bus_b.events
        state: SiteStateMeasured = event.data
        assert state.site_id == site and state.org_id == org
        assert state.battery_power_w == (-1000 - 3000) / 2 + 500  # mean per device, summed
        assert state.soc_pct == (51.0 + 71.0) / 2
        assert state.load_power_w == 400 and state.pv_power_w is None
        assert state.samples == 4 and state.devices == 2
        assert abs(state.measured_at.timestamp() - (t - 1)) < 1e-3
        assert await redis.exists(f"device:sitestate:{bucket}") == 0
    finally:
        await redis.delete(f"device:sitestate:{bucket}", f"device:sitestate:{bucket}:claimed")
        await redis.aclose()
