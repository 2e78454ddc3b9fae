"""A circuit breaker per provider (closed / open / half-open), one small module with its own tests.

- closed: calls go through; ``failure_threshold`` consecutive failures open it.
- open: calls are refused at once (no request leaves) for ``open_s`` seconds.
- half-open: after ``open_s``, exactly one call (the probe) goes through, every other call is refused
  while it is in flight; the probe's success closes the breaker, its failure opens it again.

State is per process (each replica learns on its own that a provider is down, within
``failure_threshold`` calls); the last state each replica saw is written to the shared provider health
(``providers/health.py``) so operators see it. ``clock`` is injectable for the unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        return {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}[self]


class BreakerOpen(Exception):
    """The breaker refuses the call; ``retry_in_s`` until a probe may go."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"circuit breaker open, next probe in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("failure_threshold >= 1 and open_s > 0")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as a caller would find it now (open turns half-open once ``open_s`` has passed)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Ask to make a call; raises :class:`BreakerOpen` when it must not go.

        Every call that passes must be followed by :meth:`success` or :meth:`failure` (or
        :meth:`release` when the outcome says nothing about the provider's health).
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._set(BreakerState.HALF_OPEN)
            self._probe_in_flight = True
            return
        wait = max(0.0, self.open_s - (self._clock() - self._opened_at))
        raise BreakerOpen(wait if state is BreakerState.OPEN else self.open_s)

    def success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """The call ended without telling anything about the provider (e.g. cancelled, 4xx)."""
        if self._probe_in_flight:
            self._probe_in_flight = False
            # A probe that proved nothing: back to open-but-probe-able, so the next call probes again.
            self._state = BreakerState.OPEN
            self._opened_at = self._clock() - self.open_s

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)
