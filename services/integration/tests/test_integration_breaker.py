"""The circuit breaker on its own (a fake clock): closed -> open -> half-open -> closed / open again."""

from __future__ import annotations

import pytest

from nattery_integration.providers.breaker import BreakerOpen, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_open_it_and_calls_are_refused_while_open() -> None:
    clock = Clock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        failure_threshold=3, open_s=10, clock=clock, on_change=lambda a, b: changes.append((a, b))
    )
    for _ in range(2):
        breaker.before_call()
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN)]
    clock.now += 9.9
    with pytest.raises(BreakerOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_in_s == pytest.approx(0.1)


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, open_s=10, clock=Clock())
    breaker.before_call()
    breaker.failure()
    breaker.before_call()
    breaker.success()
    breaker.before_call()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_s=5, clock=clock)
    breaker.before_call()
    breaker.failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(BreakerOpen):
        breaker.before_call()  # everyone else waits for the probe
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


def test_a_failed_probe_opens_it_again_for_a_full_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, open_s=5, clock=clock)
    for _ in range(3):
        breaker.before_call()
        breaker.failure()
    clock.now += 6
    breaker.before_call()
    breaker.failure()  # one failure is enough in half-open
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    clock.now += 1
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_probe_that_proves_nothing_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, open_s=5, clock=clock)
    breaker.before_call()
    breaker.failure()
    clock.now += 5
    breaker.before_call()
    breaker.release()  # e.g. cancelled
    breaker.before_call()  # a new probe may go
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
