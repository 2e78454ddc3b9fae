from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bridge_harness import SIM_ARGS, broker_reachable, ensure_site_user

from nattery_sim.testing import PtyPair, SimProcess


class Rig:
    """A socat pty pair with the real simulator on one end (``sim_port``) and ``bridge_port`` free."""

    def __init__(self, tmp: Path, sim_args: list[str]) -> None:
        self.tmp = tmp
        self.sim_port = tmp / "ttySim"
        self.bridge_port = tmp / "ttyBridge"
        self.ctl = tmp / "sim.ctl"
        self.sim_args = sim_args
        self.pty: PtyPair | None = None
        self.sim: SimProcess | None = None

    def start(self) -> Rig:
        self.pty = PtyPair(self.sim_port, self.bridge_port, log=self.tmp / "socat.log").start()
        self.sim = SimProcess(
            self.sim_port, control_socket=self.ctl, args=self.sim_args, log=self.tmp / "sim.log"
        ).start()
        return self

    def unplug(self) -> None:
        """USB adapter pulled: the pty pair (and the simulator's end with it) disappears."""
        if self.sim:
            self.sim.stop()
        if self.pty:
            self.pty.stop()

    def replug(self) -> None:
        self.start()

    def control(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.sim is not None
        return self.sim.control(msg)

    def truth(self) -> dict[str, Any]:
        return self.control({"cmd": "status"})

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.unplug()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(*extra: str, sim_args: list[str] | None = None) -> Rig:
        r = Rig(tmp_path, [*(sim_args if sim_args is not None else SIM_ARGS), *extra]).start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.stop()


@pytest.fixture(scope="session")
def site_user() -> None:
    if not broker_reachable():
        pytest.fail(
            "project Mosquitto on 127.0.0.1:1884 not reachable: run `bash infrastructure/local/setup.sh`"
        )
    ensure_site_user()
