"""A REST command reaches the simulated inverter through the real modbus-bridge and back.

device-service (in process, real broker / PostgreSQL / Redis / RabbitMQ / InfluxDB) provisions a site;
the bridge connects with the credentials the API returned and talks Modbus RTU over a socat pty pair to
the inverter simulator. The operator's ``set_power`` command is acknowledged by the edge, tracked to
``done``, the simulated battery charges and the telemetry device-service stores shows it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from device_test_helpers import Org, app_client, device_settings, eventually, influx_count, provision

from nattery_shared.testing import TEST_MQTT_PORT, TestIssuer

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")


class Edge:
    def __init__(self, tmp: Path) -> None:
        from nattery_sim.testing import PtyPair, SimProcess

        self.tmp = tmp
        self.pty = PtyPair(tmp / "ttySim", tmp / "ttyBridge", log=tmp / "socat.log")
        self.sim = SimProcess(
            tmp / "ttySim",
            control_socket=tmp / "sim.ctl",
            args=["--pv-kwp", "0", "--start-time", "2026-01-15T02:00:00+00:00", "--time-factor", "60"],
            log=tmp / "sim.log",
        )
        self.bridge: subprocess.Popen[bytes] | None = None

    def start(self, site: str, device: str, password: str) -> None:
        self.pty.start()
        self.sim.start()
        env = {
            **os.environ,
            "NATTERY_BRIDGE_SITE": site,
            "NATTERY_BRIDGE_DEVICE": device,
            "NATTERY_BRIDGE_DATA_DIR": str(self.tmp / "data"),
            "NATTERY_BRIDGE_SERIAL__PORT": str(self.tmp / "ttyBridge"),
            "NATTERY_BRIDGE_SERIAL__TURNAROUND_MS": "30",
            "NATTERY_BRIDGE_MQTT__HOST": "127.0.0.1",
            "NATTERY_BRIDGE_MQTT__PORT": str(TEST_MQTT_PORT),
            "NATTERY_BRIDGE_MQTT__USERNAME": site,
            "NATTERY_BRIDGE_MQTT__PASSWORD": password,
            "NATTERY_BRIDGE_MQTT__KEEPALIVE_S": "5",
            "NATTERY_BRIDGE_MQTT__RECONNECT_MAX_S": "1",
            "NATTERY_BRIDGE_TELEMETRY__FAST_INTERVAL_S": "1",
            "NATTERY_BRIDGE_TELEMETRY__SLOW_INTERVAL_S": "5",
            "NATTERY_BRIDGE_DISCOVERY__ENABLED": "false",
            "NATTERY_BRIDGE_CONTROL_CHECK_INTERVAL_S": "0.5",
            "NATTERY_BRIDGE_METRICS_PORT": "0",
        }
        with (self.tmp / "bridge.log").open("ab") as out:
            self.bridge = subprocess.Popen(
                [sys.executable, "-m", "nattery_bridge"], env=env, stdout=out, stderr=out
            )

    def truth(self) -> dict[str, Any]:
        status: dict[str, Any] = self.sim.control({"cmd": "status"})
        return status

    def stop(self) -> None:
        if self.bridge is not None and self.bridge.poll() is None:
            self.bridge.terminate()
            try:
                self.bridge.wait(10)
            except subprocess.TimeoutExpired:
                self.bridge.kill()
        self.sim.stop()
        self.pty.stop()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    e = Edge(tmp_path)
    yield e
    e.stop()


async def test_rest_command_drives_the_simulated_battery(edge: Edge, test_issuer: TestIssuer) -> None:
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
