"""A REST command reaches the simulated inverter through the real modbus-bridge and back.

device-service (in process, real broker / PostgreSQL / Redis / RabbitMQ / InfluxDB) provisions a site;
the bridge connects with the credentials the API returned and talks Modbus RTU over a socat pty pair to
the inverter simulator. The operator's ``set_power`` command is acknowledged by the edge, tracked to
``done``, the simulated battery charges and the telemetry device-service stores shows it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from device_test_helpers import Org, app_client, device_settings, eventually, influx_count, provision
from edge_rig import EdgeRig

from nattery_shared.testing import TestIssuer

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeRig]:
    e = EdgeRig(
        tmp_path,
        sim_args=["--pv-kwp", "0", "--start-time", "2026-01-15T02:00:00+00:00", "--time-factor", "60"],
    )
    yield e
    e.stop()


async def test_rest_command_drives_the_simulated_battery(edge: EdgeRig, test_issuer: TestIssuer) -> None:
    settings = device_settings(test_issuer, command_sweep_interval_s=1.0)
    async with app_client(settings) as client:
        org = Org(test_issuer)
        site = await provision(client, org)
        device_id = site["device"]["id"]
        edge.start(site["slug"], "inv1", site["mqtt"]["password"])

        async def device() -> dict[str, Any]:
            body: dict[str, Any] = (await client.get(f"/devices/{device_id}", headers=org.viewer)).json()
            return body

        async def latest() -> dict[str, Any]:
            body: dict[str, Any] = (
                await client.get(f"/devices/{device_id}/latest", headers=org.viewer)
            ).json()
            return body

        await eventually(lambda: _get(latest(), lambda b: "battery_power_w" in b["values"]), timeout_s=30)
        await eventually(lambda: _get(device(), lambda b: b["status"] == "online"), timeout_s=15)
        await eventually(lambda: _get(influx_count(device_id, field="battery_power_w"), lambda n: n > 0))

        response = await client.post(
            f"/devices/{device_id}/commands",
            json={"type": "set_power", "params": {"battery_power_w": -2000}, "ttl_s": 300},
            headers={**org.operator, "Idempotency-Key": "e2e-charge-1"},
        )
        assert response.status_code == 201, response.text
        command_id = response.json()["id"]

        async def command() -> dict[str, Any]:
            body: dict[str, Any] = (await client.get(f"/commands/{command_id}", headers=org.viewer)).json()
            return body

        async def finished() -> dict[str, Any] | None:
            body = await command()
            return body if body["state"] in ("done", "failed", "rejected", "expired") else None

        done = await eventually(finished, timeout_s=30)
        assert done["state"] == "done", done
        assert [t["state"] for t in done["transitions"]] == ["pending", "sent", "accepted", "done"]
        assert done["applied"]["target"]["mode"] == "charge"

        # The battery's behaviour changes, and so does the telemetry device-service keeps.
        await eventually(lambda: abs(edge.truth()["truth"]["battery_power_w"] + 2000) < 1, timeout_s=20)
        await eventually(
            lambda: _get(latest(), lambda b: abs(b["values"]["battery_power_w"] + 2000) <= 1), timeout_s=20
        )
        await asyncio.sleep(0)


async def _get(value: Any, check: Any) -> bool:
    return bool(check(await value))
