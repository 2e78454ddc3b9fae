from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nattery_sim.testing import RtuMaster, SimProcess, control, read_request, wait_for

Start = Callable[..., tuple[SimProcess, RtuMaster]]


def test_fleet_starts_sims_and_stops_on_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "sites"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nattery_sim.fleet", "--sites", "2", "--root", str(root), "--no-bridge",
         "--prefix", "ft", "--sim-arg=--time-factor=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def serving(slug: str) -> Any:
        assert proc.poll() is None, "the fleet runner exited"
        try:  # the control socket answers once the simulator serves its port
            return control(root / slug / "ctl", {"cmd": "status"})["ok"]
        except OSError:
            return False

    try:
        for slug in ("ft-001", "ft-002"):
            wait_for(lambda: serving(slug), 20, f"simulator {slug}")  # noqa: B023 (called at once)
        for slug in ("ft-001", "ft-002"):
            m = RtuMaster(root / slug / "ttyBridge")
            try:
                assert len(m.read(1, 0, 8)) == 8
            finally:
                m.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert not (root / "ft-001" / "ctl").exists()  # the simulator removed its socket on exit


def test_cli_fault_flags(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0", "--no-reply-next", "1", "--chunked"])
    assert sim.status()["faults"]["chunked"] is True
    assert m.request(read_request(1, 0, 60), timeout=0.4) is None
    assert sim.status()["stats"]["dropped"] == 1
    raw = m.transact(read_request(1, 0, 60))
    assert raw is not None and len(raw) == 125 and len(m.last_chunks) >= 2
    assert m.last_elapsed >= 7 * 0.016 + 0.1  # 7 gaps of 16 ms + > 100 ms wire time


def test_fleet_bridge_env(tmp_path: Path) -> None:
    from nattery_sim.fleet import Fleet, build_parser

    (tmp_path / "sites" / "x-002").mkdir(parents=True)
    (tmp_path / "sites" / "x-002" / "bridge.env").write_text(
        "# creds\nNATTERY_BRIDGE_MQTT__PASSWORD=secret2\n"
    )
    args = build_parser().parse_args(
        ["--sites", "2", "--root", str(tmp_path / "sites"), "--prefix", "x",
         "--bridge-env", "NATTERY_BRIDGE_MQTT__PASSWORD={slug}-dev"]
    )  # fmt: skip
    fleet = Fleet(args)
    fleet.bridge_cmd = ["true"]
    fleet.plan()
    envs = [s.bridge_env for s in fleet.sites]
    assert envs[0] is not None and envs[1] is not None
    assert envs[0]["NATTERY_BRIDGE_MQTT__PASSWORD"] == "x-001-dev"
    assert envs[1]["NATTERY_BRIDGE_MQTT__PASSWORD"] == "secret2"
    assert envs[0]["NATTERY_BRIDGE_SITE"] == "x-001"
    assert envs[1]["NATTERY_BRIDGE_SERIAL__PORT"].endswith("x-002/ttyBridge")
    assert envs[0]["NATTERY_BRIDGE_METRICS_PORT"] == "9200"
