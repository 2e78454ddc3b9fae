"""Interoperability: mbpoll (libmodbus, an independent Modbus master) reads and writes the simulator.

Our own masters (the bridge, ``nattery_sim.testing.RtuMaster``) share their framing library with the
simulator, so a framing mistake on both sides would pass every other test. mbpoll shares nothing with
us: it is the Debian package (infrastructure/local/setup.sh installs it), driven over the same socat
pty pair the bridge uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from nattery_contracts.modbus import decode_point, load_profile
from nattery_sim.testing import RtuMaster, SimProcess

Start = Callable[..., tuple[SimProcess, RtuMaster]]
DEYE = load_profile("deye-sunsynk-1ph")


def mbpoll(
    port: str, *options: str, write: tuple[int, ...] = (), unit: int = 1, timeout_s: float = 1.0
) -> subprocess.CompletedProcess[str]:
    """One mbpoll run: reads, or writes ``write`` (one value: FC06, several: FC16)."""
    exe = shutil.which("mbpoll")
    if exe is None:
        pytest.skip("mbpoll is not installed (apt-get install mbpoll)")
    # -0: PDU addressing (register 184 is reference 184); -1: once; 8N1 like a Deye
    cmd = [exe, "-m", "rtu", "-a", str(unit), "-b", "9600", "-P", "none", "-0", "-1", "-o", str(timeout_s)]
    cmd += [*options, port, *(str(v) for v in write)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def values(out: str) -> dict[int, int]:
    """``[184]: \t50`` lines of mbpoll's output."""
    return {int(a): int(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", out, re.MULTILINE)}


def test_mbpoll_reads_and_writes_the_simulator(start_sim: Start) -> None:
    sim, m = start_sim(["--time-factor", "0", "--start-soc-pct", "63"])
    port = m.ser.port
    m.close()  # mbpoll opens the tty itself

    # FC03: SOC and the battery block decode to the simulator's truth
    r = mbpoll(port, "-t", "4", "-r", "182", "-c", "10")
    assert r.returncode == 0, r.stderr
    regs = values(r.stdout)
    assert sorted(regs) == list(range(182, 192))
    soc = DEYE["battery_soc_pct"]
    assert (
        decode_point(soc, [regs[a] for a in soc.addresses])
        == round(sim.status()["truth"]["battery_soc_pct"])
        == 63
    )
    # FC03 of a 32-bit value, low word first (mbpoll's default, Deye's order): rated power 5000 W x 10
    r = mbpoll(port, "-t", "4:int", "-r", "16")
    assert r.returncode == 0, r.stderr
    assert values(r.stdout) == {16: 50000}

    # FC16 (several values) and FC06 (one value), each read back
    r = mbpoll(port, "-t", "4", "-r", "250", write=(100, 200, 300))
    assert r.returncode == 0 and "Written 3 references" in r.stdout, r.stderr
    r = mbpoll(port, "-t", "4", "-r", "250", "-c", "3")
    assert values(r.stdout) == {250: 100, 251: 200, 252: 300}
    r = mbpoll(port, "-t", "4", "-r", "211", write=(7,))
    assert r.returncode == 0 and "Written 1 references" in r.stdout, r.stderr
    r = mbpoll(port, "-t", "4", "-r", "211")
    assert values(r.stdout) == {211: 7}

    # exception replies reach mbpoll as Modbus errors, not timeouts
    r = mbpoll(port, "-t", "4", "-r", "184", write=(5,))  # SOC is read-only
    assert r.returncode != 0 and "Illegal data address" in r.stderr, (r.stdout, r.stderr)
    r = mbpoll(port, "-t", "4", "-r", "211", write=(186,))  # max discharge current 0..185
    assert r.returncode != 0 and "Illegal data value" in r.stderr, (r.stdout, r.stderr)
    r = mbpoll(port, "-u")  # FC17 report slave id: not a Deye function
    assert "Illegal function" in r.stderr, (r.stdout, r.stderr)
    # another unit on the line: silence, so mbpoll times out
    r = mbpoll(port, "-t", "4", "-r", "184", unit=2, timeout_s=0.3)
    assert r.returncode != 0 and "timed out" in r.stderr, (r.stdout, r.stderr)
    # and the simulator still serves after all of it
    r = mbpoll(port, "-t", "4", "-r", "184")
    assert r.returncode == 0 and values(r.stdout) == {184: 63}
