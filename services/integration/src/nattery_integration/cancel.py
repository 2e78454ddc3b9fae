"""Cancellation that a library turned into another exception must still stop our loops.

Some clients (redis, psycopg pool, httpx) may translate a ``CancelledError`` that hits them mid-call
into their own error; a loop that logs ``Exception`` and carries on would then never stop.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
