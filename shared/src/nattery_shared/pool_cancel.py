"""psycopg_pool loses a task's cancellation on Python 3.11: fixed here, once, for every service.

Cause (found 2026-12-07; a job runner ignored ``cancel()`` and hung a test session for 300 s): a task
waiting for a pool connection waits in ``psycopg_pool._acompat.ACondition.wait_timeout``, which is
``asyncio.wait_for(self.wait(), timeout)`` (``AEvent.wait_timeout`` too). On 3.11 ``wait_for`` returns
the inner result when the cancellation arrives in the same loop iteration as the connection is handed
over, and the ``CancelledError`` is never delivered (CPython gh-86296, fixed only by 3.12's rewrite;
psycopg declined to work around it: psycopg/psycopg#1413). The task goes on with its connection as if
never cancelled, and a ``while`` loop around it runs forever. ``shared/tests/test_pool_cancel.py`` reproduces
it: a cancel within two loop iterations of the hand-over was lost 120 times in 120 before this fix.

The fix: the same wait on ``asyncio.timeout()``, which counts cancellations and re-raises the outside
one (as ``nattery_contracts.aio`` does for our own waits). Only on 3.11, where the bug is; a psycopg_pool
release without these methods makes :func:`keep_cancellation` raise rather than silently stop
protecting us. The loops' ``raise_if_cancelling()`` stays for the libraries that still call
``wait_for`` (aio-pika, redis).

Applied by :func:`nattery_shared.db.create_pool` before it builds a pool, so every service (and every
tool that opens a pool through the kit) has it; code that builds an ``AsyncConnectionPool`` itself calls
:func:`keep_cancellation` first.
"""

from __future__ import annotations

import asyncio
import sys

import psycopg_pool._acompat as _pool_compat

_PATCHED = "__nattery_keeps_cancellation__"


async def _wait_timeout(self: asyncio.Condition | asyncio.Event, timeout_s: float, /) -> bool:
    """``wait_timeout`` of psycopg_pool's condition and event (True when woken, False on timeout),
    keeping a cancellation."""
    try:
        async with asyncio.timeout(timeout_s):
            await self.wait()
    except TimeoutError:
        return False
    return True


def keep_cancellation() -> None:
    """Make psycopg_pool's connection wait keep a cancellation (idempotent; nothing to do on 3.12+)."""
    if sys.version_info >= (3, 12):
        return
    setattr(_wait_timeout, _PATCHED, True)
    # the condition: a client waiting for a connection; the event: pool.open(wait=True), the scheduler
    for cls in (_pool_compat.ACondition, _pool_compat.AEvent):
        current = getattr(cls, "wait_timeout", None)
        if current is None:
            raise RuntimeError(
                f"psycopg_pool changed: {cls.__name__}.wait_timeout is gone; see nattery_shared/pool_cancel.py"
            )
        if getattr(current, _PATCHED, False):
            continue
        cls.wait_timeout = _wait_timeout  # type: ignore[method-assign,assignment]
