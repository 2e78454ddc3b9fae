"""PostgreSQL through psycopg 3's async pool. Each service works in its own schema."""

from __future__ import annotations

import logging

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from nattery_shared.pool_cancel import keep_cancellation
from nattery_shared.settings import PostgresSettings

log = logging.getLogger(__name__)


async def _configure(conn: AsyncConnection) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


def create_pool(settings: PostgresSettings, *, schema: str, name: str) -> AsyncConnectionPool:
    """A pool whose connections see ``schema`` first. Open it with :func:`open_pool`.

    Its connection wait keeps a task's cancellation (psycopg_pool loses one on Python 3.11:
    :mod:`nattery_shared.pool_cancel`), for every service, from the first pool on.
    """
    keep_cancellation()
    return AsyncConnectionPool(
        settings.dsn.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"options": f"-c search_path={schema},public", "application_name": name},
        configure=_configure,
        open=False,
        name=name,
        reconnect_timeout=float("inf"),  # keep trying in the background; /readyz reports it
    )


async def open_pool(pool: AsyncConnectionPool) -> None:
    # wait=False: a service starts (and answers /readyz 503) even while PostgreSQL is down.
    await pool.open(wait=False)


async def ping(pool: AsyncConnectionPool, timeout_s: float = 2.0) -> None:
    async with pool.connection(timeout=timeout_s) as conn:
        await conn.execute("SELECT 1")
