"""A second test session (or a benchmark) waits for the running one instead of wiping its schemas."""

from __future__ import annotations

import subprocess
import sys

from nattery_shared.testing import TEST_SERVERS_LOCK

PROBE = (
    "from nattery_shared.testing import lock_test_servers\n"
    "lock_test_servers('probe')\n"
    "print('acquired', flush=True)\n"
)


def test_a_second_session_waits_while_this_one_runs() -> None:
    assert TEST_SERVERS_LOCK.exists()
    assert "pytest session" in TEST_SERVERS_LOCK.read_text()  # this session holds it
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # The probe says it waits before it blocks (its import may take seconds on a loaded machine); a
        # probe that took the lock would print "acquired" and exit instead, closing stderr (readline "").
        assert proc.stderr is not None
        said = proc.stderr.readline()
        assert "waiting for a pytest session" in said, said
        assert proc.poll() is None, "the probe took the lock while this session holds it"
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
    assert "acquired" not in out
