"""Under `make test` (NATTERY_TEST_STRICT=1) a skipped test fails; a bare pytest keeps the skip."""

from __future__ import annotations

import pytest

SKIPPING = """
import pytest

def test_needs_a_server():
    pytest.skip("server not running")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    assert False
"""


def test_a_skip_fails_under_make_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(SKIPPING)
    monkeypatch.setenv("NATTERY_TEST_STRICT", "1")
    result = pytester.runpytest_subprocess("-p", "nattery_shared.testing", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*NATTERY_TEST_STRICT=1*server not running*"])


def test_a_bare_pytest_keeps_its_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(SKIPPING)
    monkeypatch.delenv("NATTERY_TEST_STRICT", raising=False)
    result = pytester.runpytest_subprocess("-p", "nattery_shared.testing", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1, xfailed=1)
