"""The loop helpers: back-off retries, one log line when failing starts and one when it ends,
poke/stop, and cancellation that a client swallowed still stopping the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from nattery_contracts.aio import raise_if_cancelling
from nattery_shared.retry import LOOP_FAILING, Backoff, FailureLog, RetryLoop, Stopped, retry_until_ok

FAST = Backoff(initial_s=0.001, max_s=0.002)


def records(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith(name)]


def failing_times(n: int, err: Exception | None = None) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A step that fails its first ``n`` calls, then returns "ok"; and the list of its call count."""
    calls = [0]

    async def step() -> str:
        calls[0] += 1
        if calls[0] <= n:
            raise err or ConnectionError(f"down (call {calls[0]})")
        return "ok"

    return step, calls


def test_failure_log_logs_the_first_failure_and_the_recovery_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    flog = FailureLog("test cache")
    assert flog.ok() is False  # nothing to recover from: silent
    assert [flog.failed(ConnectionError(str(i))) for i in range(5)] == [True, False, False, False, False]
    assert flog.failing
    assert LOOP_FAILING.labels("test cache")._value.get() == 1
    assert flog.ok() is True
    assert flog.ok() is False
    assert LOOP_FAILING.labels("test cache")._value.get() == 0
    logged = records(caplog, "test cache")
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO]
    assert "ConnectionError('0')" in logged[0][1]
    assert "after 5 failed attempts" in logged[1][1]


async def test_retry_until_ok_retries_then_returns_and_logs_twice(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    step, calls = failing_times(4)
    assert await retry_until_ok(step, name="test connect", backoff=FAST) == "ok"
    assert calls[0] == 5
    assert [level for level, _ in records(caplog, "test connect")] == [logging.WARNING, logging.INFO]


async def test_retry_until_ok_lets_other_errors_through_at_once() -> None:
    step, calls = failing_times(3, ValueError("a bug, not an outage"))
    with pytest.raises(ValueError, match="a bug"):
        await retry_until_ok(step, name="test typed", backoff=FAST, retry_on=ConnectionError)
    assert calls[0] == 1


async def test_retry_until_ok_raises_stopped_when_stop_is_set_during_back_off() -> None:
    stop = asyncio.Event()
    calls = [0]

    async def step() -> None:
        calls[0] += 1
        stop.set()  # asked to stop while the dependency is down
        raise ConnectionError("down")

    with pytest.raises(Stopped):
        # a back-off of an hour: only the stop event can end the wait
        await retry_until_ok(step, name="test stop", backoff=Backoff(3600, 3600), stop=stop)
    assert calls[0] == 1


async def test_back_off_waits_grow_exponentially_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    step, _ = failing_times(6)
    original = asyncio.sleep

    async def recording_sleep(delay_s: float, *args: object) -> None:
        waits.append(delay_s)
        await original(0)  # record the wait tenacity asks for, without taking it

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    await retry_until_ok(step, name="test backoff", backoff=Backoff(initial_s=1.0, max_s=8.0))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


async def test_loop_runs_every_period_and_at_once_when_poked() -> None:
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    loop = RetryLoop(step, name="test poke", every_s=3600)  # only a poke can start a second turn
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(ran.wait(), 10)
        ran.clear()
        loop.poke()
        await asyncio.wait_for(ran.wait(), 10)
        assert loop.turns >= 1
        loop.stop()
        await asyncio.wait_for(task, 10)  # stop ends run() even while it waits for the next period
    finally:
        task.cancel()


async def test_loop_logs_one_failure_and_one_recovery_over_many_turns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    step, calls = failing_times(5)
    done = asyncio.Event()

    async def counted() -> None:
        await step()
        if calls[0] >= 8:
            done.set()

    loop = RetryLoop(counted, name="test sweeper", every_s=0, backoff=FAST)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 10)
    assert [level for level, _ in records(caplog, "test sweeper")] == [logging.WARNING, logging.INFO]
    assert not loop.failing


async def test_loop_stops_when_a_client_turned_the_cancellation_into_its_own_error() -> None:
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("pool closed") from None  # what some clients do

    loop = RetryLoop(step, name="test swallow", every_s=0, backoff=FAST)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_loop_stops_when_a_client_swallowed_the_cancellation_and_returned() -> None:
    entered = asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallowed entirely

    loop = RetryLoop(step, name="test swallow quietly", every_s=0, backoff=FAST)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_raise_if_cancelling_is_silent_outside_a_cancellation() -> None:
    raise_if_cancelling()  # no error: this task is not being cancelled


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)
