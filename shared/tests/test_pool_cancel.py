"""A task cancelled while it waits for a pool connection stops, even when the connection is handed to
it in the same loop iteration (psycopg_pool's ``wait_for`` lost that cancel on 3.11: nattery_shared/pool_cancel.py)."""

from __future__ import annotations

import asyncio

import psycopg_pool._acompat as _pool_compat
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from nattery_shared.db import create_pool
from nattery_shared.pool_cancel import keep_cancellation
from nattery_shared.settings import PostgresSettings
from nattery_shared.testing import TEST_PG_DSN


async def test_a_cancel_at_the_connection_hand_over_is_delivered() -> None:
    keep_cancellation()  # what create_pool does before it builds a pool (idempotent)
    pool = AsyncConnectionPool(TEST_PG_DSN, min_size=1, max_size=1, open=False, name="pool-cancel-test")
    await pool.open(wait=True)
    outcomes: dict[int, list[str]] = {}
    try:
        # The cancel lands 0, 1, 2 ... loop iterations after the held connection is given back, i.e. as
        # the waiting task is being handed it; before the fix every try of 0-2 iterations ran to its end.
        for yields in range(6):
            for _ in range(10):
                held = await pool.getconn()

                async def waiter() -> None:
                    async with pool.connection() as conn:
                        await conn.execute("SELECT 1")

                task = asyncio.create_task(waiter())
                while not pool.get_stats().get("requests_waiting"):
                    await asyncio.sleep(0)  # the waiter is queued for the held connection
                await pool.putconn(held)
                for _ in range(yields):
                    await asyncio.sleep(0)
                if not task.cancel():
                    await task  # it had already finished: no cancel to lose
                    outcomes.setdefault(yields, []).append("finished first")
                    continue
                try:
                    await task
                except asyncio.CancelledError:
                    outcomes.setdefault(yields, []).append("cancelled")
                else:
                    outcomes.setdefault(yields, []).append("cancel lost")
    finally:
        await pool.close()
    lost = {y: o.count("cancel lost") for y, o in outcomes.items() if "cancel lost" in o}
    assert not lost, f"cancel() swallowed (by loop iterations after the hand-over): {lost}"
    assert outcomes[0].count("cancelled") == 10  # the race window itself was exercised


def test_every_pool_the_kit_creates_has_the_fix() -> None:
    """``create_pool`` applies it itself: no service has to remember a call at its start-up."""
    classes = (_pool_compat.ACondition, _pool_compat.AEvent)
    before = {cls: cls.wait_timeout for cls in classes}

    async def unpatched(self: object, timeout_s: float, /) -> bool:  # as psycopg_pool ships it
        raise AssertionError("never called")

    try:
        for cls in classes:
            cls.wait_timeout = unpatched  # type: ignore[method-assign,assignment]
        create_pool(PostgresSettings(dsn=SecretStr(TEST_PG_DSN)), schema="public", name="pool-cancel-kit")
        for cls in classes:
            assert cls.wait_timeout is not unpatched, (
                f"{cls.__name__}.wait_timeout not patched by create_pool"
            )
            assert getattr(cls.wait_timeout, "__nattery_keeps_cancellation__", False)
    finally:
        for cls, method in before.items():
            cls.wait_timeout = method  # type: ignore[method-assign]
