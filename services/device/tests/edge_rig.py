"""The edge as it runs at a site, for end-to-end tests: the inverter simulator on one end of a socat
pty pair and the real modbus-bridge (a subprocess) on the other, connected to the test broker with a
site's credentials. Used by tests/device (a REST command drives the battery) and tests/e2e (prices in,
a battery that moves as planned out)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nattery_shared.testing import TEST_MQTT_PORT


class EdgeRig:
    def __init__(self, tmp: Path, *, sim_args: Sequence[str] = ("--pv-kwp", "0")) -> None:
        from nattery_sim.testing import PtyPair, SimProcess

        self.tmp = tmp
        self.pty = PtyPair(tmp / "ttySim", tmp / "ttyBridge", log=tmp / "socat.log")
        self.sim = SimProcess(
            tmp / "ttySim", control_socket=tmp / "sim.ctl", args=list(sim_args), log=tmp / "sim.log"
        )
        self.bridge: subprocess.Popen[bytes] | None = None

    def start(self, site: str, device: str, password: str) -> None:
        """Simulator and bridge up; the bridge logs to ``bridge.log`` in the rig's directory."""
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
        """The simulator's own state (what the battery really does), from its control socket."""
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
