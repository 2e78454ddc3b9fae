"""SQL of the markets area (schema ``integration``): versioned price sets and GB imbalance periods."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nattery_integration.markets.niv import NivPoint
from nattery_integration.markets.prices import PriceSet

Row = dict[str, Any]


class MarketsRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # --- price sets ------------------------------------------------------------------------------
    async def lock_price_set(self, conn: AsyncConnection[Any], s: PriceSet) -> None:
        """Serialise writers of one window (two replicas, a manual run beside the job)."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"price_set:{s.market}:{s.region}:{s.direction}:{s.start.isoformat()}",),
        )

    async def latest_version(self, conn: AsyncConnection[Any], s: PriceSet) -> Row | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT version, digest FROM price_sets WHERE market = %s AND region = %s AND direction = %s "
                "AND window_start = %s ORDER BY version DESC LIMIT 1",
                (s.market, s.region, s.direction, s.start),
            )
            return await cur.fetchone()

    async def insert_version(
        self, conn: AsyncConnection[Any], s: PriceSet, version: int, provider: str
    ) -> None:
        await conn.execute(
            "INSERT INTO price_sets (market, region, direction, window_start, window_end, version, provider, "
            "currency, unit, digest, prices) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                s.market,
                s.region,
                s.direction,
                s.start,
                s.end,
                version,
                provider,
                s.currency,
                s.unit,
                s.digest(),
                Jsonb(
                    [[p.start.isoformat(), p.end.isoformat(), p.minor_per_kwh, p.native] for p in s.prices]
                ),
            ),
        )

    async def latest_sets(
        self, market: str, region: str, direction: str, start: datetime, end: datetime
    ) -> list[Row]:
        """The latest version of every window overlapping [start, end)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT DISTINCT ON (window_start) market, region, direction, window_start, window_end, version, "
                "provider, currency, unit, prices, fetched_at FROM price_sets WHERE market = %s AND region = %s "
                "AND direction = %s AND window_end > %s AND window_start < %s "
                "ORDER BY window_start, version DESC",
                (market, region, direction, start, end),
            )
            return await cur.fetchall()

    # --- NIV -------------------------------------------------------------------------------------
    async def upsert_niv(self, conn: AsyncConnection[Any], source: str, p: NivPoint) -> bool:
        """Store a period; True when it is new or changed (then it is published)."""
        cur = await conn.execute(
            "INSERT INTO niv_periods (source, settlement_date, settlement_period, start_at, niv_mwh, "
            "system_sell_price_gbp_per_mwh, system_buy_price_gbp_per_mwh) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (source, settlement_date, settlement_period) DO UPDATE SET start_at = EXCLUDED.start_at, "
            "niv_mwh = EXCLUDED.niv_mwh, system_sell_price_gbp_per_mwh = EXCLUDED.system_sell_price_gbp_per_mwh, "
            "system_buy_price_gbp_per_mwh = EXCLUDED.system_buy_price_gbp_per_mwh, fetched_at = now() "
            "WHERE (niv_periods.niv_mwh, niv_periods.system_sell_price_gbp_per_mwh, "
            "niv_periods.system_buy_price_gbp_per_mwh) IS DISTINCT FROM "
            "(EXCLUDED.niv_mwh, EXCLUDED.system_sell_price_gbp_per_mwh, EXCLUDED.system_buy_price_gbp_per_mwh) "
            "RETURNING 1",
            (
                source,
                p.settlement_date,
                p.settlement_period,
                p.start,
                p.niv_mwh,
                p.system_sell_price_gbp_per_mwh,
                p.system_buy_price_gbp_per_mwh,
            ),
        )
        return await cur.fetchone() is not None

    async def niv(self, source: str, day: date) -> list[Row]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT * FROM niv_periods WHERE source = %s AND settlement_date = %s ORDER BY settlement_period",
                (source, day),
            )
            return await cur.fetchall()
