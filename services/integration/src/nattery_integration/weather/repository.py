"""SQL of the weather area: the latest weather and PV forecast per site (``site_forecasts``)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool


class WeatherRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def digest(self, conn: AsyncConnection[Any], site_id: uuid.UUID) -> str | None:
        cur = await conn.execute(
            "SELECT digest FROM site_forecasts WHERE site_id = %s FOR UPDATE", (site_id,)
        )
        row = await cur.fetchone()
        return None if row is None else str(row["digest"])

    async def save(
        self,
        conn: AsyncConnection[Any],
        site_id: uuid.UUID,
        provider: str,
        weather: list[dict[str, Any]],
        pv: list[dict[str, Any]],
        digest: str,
    ) -> None:
        await conn.execute(
            "INSERT INTO site_forecasts (site_id, provider, weather, pv, digest) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (site_id) DO UPDATE SET provider = EXCLUDED.provider, weather = EXCLUDED.weather, "
            "pv = EXCLUDED.pv, digest = EXCLUDED.digest, fetched_at = now()",
            (site_id, provider, Jsonb(weather), Jsonb(pv), digest),
        )

    async def latest(self, site_id: uuid.UUID) -> dict[str, Any] | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM site_forecasts WHERE site_id = %s", (site_id,))
            return await cur.fetchone()
