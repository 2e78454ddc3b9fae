"""Small asyncio helpers that keep cancellation intact.

Why not ``asyncio.wait_for``: on Python 3.11 it returns the inner result when a cancellation arrives in
the same loop iteration as the inner await completes, and the cancellation is lost (CPython gh-86296,
fixed by the 3.12 rewrite). A ``while True`` loop around it then never stops, and a SIGTERM'd process
hangs until it is killed. ``asyncio.timeout()`` counts cancellations and re-raises the outside one, so
every timed wait in our code goes through it.

Why :func:`raise_if_cancelling`: some clients (redis, psycopg pool, httpx) turn a ``CancelledError`` that
hits them mid-call into their own error, or swallow it; a loop that logs ``Exception`` and carries on
would then never stop. Call it in every ``except Exception`` of a loop and at the top of each turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task has been asked to cancel (a client hid it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``event``; True when it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """Await ``awaitable`` for at most ``timeout_s`` (None: no limit; TimeoutError after); keeps cancellation."""
    async with asyncio.timeout(timeout_s):
        return await awaitable
