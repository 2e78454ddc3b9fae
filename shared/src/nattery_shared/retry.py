"""Background loops that keep going: retry with back-off, say once that they fail and once that they work.

STYLE: "Log a failing dependency once when it starts failing and once when it recovers, not on every
poll." Every service had its own ``while True`` / ``except Exception`` / ``failing = True`` loop for
this; these are the one copy.

- :class:`FailureLog` is the logging part alone, for a call site that is not a loop of its own (a cache
  write on the hot path, a best-effort side effect).
- :func:`retry_until_ok` runs one step until it succeeds, waiting with exponential back-off (tenacity)
  between attempts: connect loops.
- :class:`RetryLoop` runs a step for ever, every ``every_s`` (or sooner when poked), retrying a failing
  step with back-off: relays, sweepers, refreshers, workers.

Cancellation always wins: a step that raises after a client swallowed the task's cancellation, or that
returns normally while the task is cancelling, ends the loop (see ``nattery_contracts.aio``).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import Counter, Gauge
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from nattery_contracts.aio import raise_if_cancelling, wait_event

T = TypeVar("T")

log = logging.getLogger(__name__)

# ``loop`` is the fixed name given to FailureLog/RetryLoop ("outbox relay"), never per-item text.
LOOP_FAILING = Gauge("nattery_loop_failing", "1 while a background loop's step keeps failing", ["loop"])
LOOP_FAILURES = Counter(
    "nattery_loop_failures_total", "Failed attempts of a background loop's step", ["loop"]
)


class Stopped(Exception):
    """:func:`retry_until_ok` gave up because its ``stop`` event was set."""


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between failed attempts: ``initial_s``, doubling, at most ``max_s``.

    ``jitter_s`` adds up to that much at random to each wait, so replicas that failed together do not
    retry in step against a dependency that is just coming back.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.jitter_s < 0:
            raise ValueError(f"invalid back-off {self}")


class FailureLog:
    """Logs once (WARNING) when ``name`` starts failing and once (INFO) when it works again."""

    def __init__(self, name: str, logger: logging.Logger | None = None) -> None:
        self.name = name
        self._log = logger or log
        self._failing_since: float | None = None
        self._failures = 0

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def failed(self, err: BaseException) -> bool:
        """Record a failed attempt; True (and logged) when it is the first of a run of failures."""
        self._failures += 1
        LOOP_FAILURES.labels(self.name).inc()
        if self._failing_since is not None:
            return False
        self._failing_since = time.monotonic()
        LOOP_FAILING.labels(self.name).set(1)
        self._log.warning("%s failing, will retry: %r", self.name, err)
        return True

    def ok(self) -> bool:
        """Record a success; True (and logged) when it ends a run of failures."""
        if self._failing_since is None:
            return False
        failed_for_s = time.monotonic() - self._failing_since
        self._log.info(
            "%s works again after %d failed attempts over %.1f s", self.name, self._failures, failed_for_s
        )
        self._failing_since, self._failures = None, 0
        LOOP_FAILING.labels(self.name).set(0)
        return True


async def retry_until_ok(
    step: Callable[[], Awaitable[T]],
    *,
    name: str,
    logger: logging.Logger | None = None,
    backoff: Backoff = Backoff(),
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    failures: FailureLog | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """Await ``step()`` until it returns; wait with back-off after each failure of a ``retry_on`` type.

    Other exceptions propagate at once. The first failure is logged, and the success that ends the
    failures; ``failures`` lets a caller keep that state across calls. When ``stop`` is set, the
    back-off wait ends and :class:`Stopped` is raised instead of another attempt.
    """
    failures = failures or FailureLog(name, logger)

    async def attempt() -> T:
        if stop is not None and stop.is_set():
            raise Stopped(name)
        try:
            return await step()
        except Exception as err:
            raise_if_cancelling()  # a client turned our cancellation into its own error
            if isinstance(err, retry_on):
                failures.failed(err)
            raise

    async def sleep(delay_s: float) -> None:
        if stop is None:
            await asyncio.sleep(delay_s)
        else:
            await wait_event(stop, delay_s)

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda err: isinstance(err, retry_on) and not isinstance(err, Stopped)),
        wait=wait_exponential_jitter(
            multiplier=backoff.initial_s, max=backoff.max_s, jitter=backoff.jitter_s
        ),
        sleep=sleep,
        reraise=True,
    )
    result: T = await retrying(attempt)
    raise_if_cancelling()  # the step returned, but a client swallowed the cancellation on the way
    failures.ok()
    return result


class RetryLoop:
    """Run ``step`` for ever: every ``every_s``, or at once after :meth:`poke`; until :meth:`stop`.

    A failing step is retried with ``backoff`` (not ``every_s``) until it works; the first failure and
    the recovery are logged once. ``wait_first``: wait ``every_s`` before the first step (a refresher
    whose first load happened at start-up). Cancel the task, or call :meth:`stop`, to end it.
    """

    def __init__(
        self,
        step: Callable[[], Awaitable[object]],
        *,
        name: str,
        every_s: float,
        logger: logging.Logger | None = None,
        backoff: Backoff = Backoff(),
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        wait_first: bool = False,
    ) -> None:
        if every_s < 0:
            raise ValueError("every_s must be >= 0")
        self.name = name
        self._step = step
        self._every_s = every_s
        self._backoff = backoff
        self._retry_on = retry_on
        self._wait_first = wait_first
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self.failures = FailureLog(name, logger)
        self.turns = 0  # successful steps, for tests and /metrics-less introspection

    @property
    def failing(self) -> bool:
        return self.failures.failing

    def poke(self) -> None:
        """Run the step now rather than at the next period (new work was enqueued)."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` after the current step, even if a client swallowed the task's cancellation."""
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        if self._wait_first:
            await wait_event(self._wake, self._every_s)
        while not self._stopped.is_set():
            raise_if_cancelling()
            self._wake.clear()  # a poke that arrives during the step runs the next one at once
            try:
                await retry_until_ok(
                    self._step,
                    name=self.name,
                    backoff=self._backoff,
                    retry_on=self._retry_on,
                    failures=self.failures,
                    stop=self._stopped,
                )
            except Stopped:
                return
            self.turns += 1
            if not self._stopped.is_set():
                await wait_event(self._wake, self._every_s)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
