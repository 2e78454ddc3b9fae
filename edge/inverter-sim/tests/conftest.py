from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from nattery_sim.testing import PtyPair, RtuMaster, SimProcess

Started = tuple[SimProcess, RtuMaster]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """Factory: socat pty pair + simulator subprocess on one end + an RtuMaster on the other."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    cleanup: list[PtyPair | SimProcess | RtuMaster] = []

    def start(args: Sequence[str] = (), name: str = "s") -> Started:
        d = tmp_path / name
        pty = PtyPair(d / "ttySim", d / "ttyMaster", log=d / "socat.log").start()
        cleanup.append(pty)
        sim = SimProcess(pty.a, control_socket=d / "ctl", args=list(args), log=d / "sim.log").start()
        cleanup.append(sim)
        master = RtuMaster(pty.b, timeout=1.0)
        cleanup.append(master)
        return sim, master

    yield start
    for obj in reversed(cleanup):
        if isinstance(obj, RtuMaster):
            obj.close()
        else:
            obj.stop()
