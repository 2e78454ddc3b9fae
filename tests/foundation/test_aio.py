"""Timed waits keep a cancellation that arrives together with the awaited thing (a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from nattery_contracts.aio import wait_event, within


async def _loop_until_cancelled(wait: Callable[[asyncio.Event], Awaitable[object]]) -> bool:
    """Run ``while True: await wait(event)``, then set the event and cancel in the same iteration.

    Returns True when the cancellation ended the loop, False when it was swallowed.
    """
    ev = asyncio.Event()
    rounds = 0

    async def worker() -> None:
        nonlocal rounds
        while True:
            await wait(ev)
            ev.clear()
            rounds += 1

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.01)
    ev.set()  # the inner wait completes ...
    task.cancel()  # ... in the same loop iteration as the stop
    await asyncio.sleep(0.05)
    stopped = task.done()
    if not stopped:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return stopped


async def test_wait_event_keeps_a_simultaneous_cancellation() -> None:
    assert await _loop_until_cancelled(lambda ev: wait_event(ev, 1.0))


async def test_within_keeps_a_simultaneous_cancellation() -> None:
    assert await _loop_until_cancelled(lambda ev: within(ev.wait(), 1.0))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for was fixed in 3.12")
async def test_the_stdlib_wait_for_loses_it_on_311() -> None:
    # Why the helpers exist: this is the race that left a SIGTERM'd bridge running until SIGKILL.
    assert not await _loop_until_cancelled(lambda ev: asyncio.wait_for(ev.wait(), 1.0))


async def test_wait_event_times_out_and_reports_state() -> None:
    ev = asyncio.Event()
    assert await wait_event(ev, 0.01) is False
    ev.set()
    assert await wait_event(ev, 0.01) is True


async def test_within_raises_timeout() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(1), 0.01)
