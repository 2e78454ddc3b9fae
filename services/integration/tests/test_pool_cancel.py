"""A task cancelled while it waits for a pool connection stops, even when the connection is handed to
it in the same loop iteration (psycopg_pool's ``wait_for`` lost that cancel on 3.11: pool_cancel.py)."""

from __future__ import annotations

import asyncio

from psycopg_pool import AsyncConnectionPool

import nattery_integration  # noqa: F401  (importing the service applies the fix)
from nattery_integration.pool_cancel import keep_cancellation
from nattery_shared.testing import TEST_PG_DSN


async def test_a_cancel_at_the_connection_hand_over_is_delivered() -> None:
    keep_cancellation()  # idempotent: applied once by the import above
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
