"""SQL of tariffs (``tariffs``, ``tariff_rates``), which tariff each site uses (``site_tariffs``) and
market prices (``prices``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, time
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from nattery_trading.sites.repository import REGISTERED_SITES


@dataclass(frozen=True)
class RateRow:
    start_local: time
    end_local: time
    p_per_kwh: float


@dataclass(frozen=True)
class TariffRow:
    tariff_id: uuid.UUID
    org_id: uuid.UUID
    name: str
    direction: str
    kind: str
    fixed_p_per_kwh: float | None
    market: str | None
    region: str
    standing_charge_p_per_day: float
    currency: str
    created_at: datetime
    rates: tuple[RateRow, ...] = ()


@dataclass(frozen=True)
class SiteTariff:
    """The tariff a site uses in one direction (``site_tariffs`` joined with ``tariffs``)."""

    site_id: uuid.UUID
    direction: str
    tariff_id: uuid.UUID
    kind: str
    fixed_p_per_kwh: float | None
    market: str | None
    region: str
    standing_charge_p_per_day: float
    currency: str
    rates: tuple[RateRow, ...] = ()


_TARIFF = ", ".join(f.name for f in fields(TariffRow) if f.name != "rates")


class TariffRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def create(self, org_id: uuid.UUID, t: dict[str, Any]) -> TariffRow:
        tariff_id = uuid.uuid4()
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=class_row(TariffRow)) as cur,
        ):
            await cur.execute(
                "INSERT INTO tariffs (tariff_id, org_id, name, direction, kind, fixed_p_per_kwh, market, region, "
                "standing_charge_p_per_day, currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                f"RETURNING {_TARIFF}",
                (
                    tariff_id,
                    org_id,
                    t["name"],
                    t["direction"],
                    t["kind"],
                    t.get("fixed_p_per_kwh"),
                    t.get("market"),
                    t.get("region") or "",
                    t.get("standing_charge_p_per_day", 0.0),
                    t.get("currency", "GBP"),
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            rates = tuple(
                RateRow(r["start_local"], r["end_local"], r["p_per_kwh"]) for r in t.get("rates", [])
            )
            for r in rates:
                await cur.execute(
                    "INSERT INTO tariff_rates (tariff_id, start_local, end_local, p_per_kwh) VALUES (%s, %s, %s, %s)",
                    (tariff_id, r.start_local, r.end_local, r.p_per_kwh),
                )
        return replace(row, rates=rates)

    async def of_org(self, org_id: uuid.UUID) -> list[TariffRow]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(TariffRow)) as cur:
            await cur.execute(
                f"SELECT {_TARIFF} FROM tariffs WHERE org_id = %s ORDER BY created_at", (org_id,)
            )
            return await cur.fetchall()

    async def get(self, tariff_id: uuid.UUID) -> TariffRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(TariffRow)) as cur:
            await cur.execute(f"SELECT {_TARIFF} FROM tariffs WHERE tariff_id = %s", (tariff_id,))
            row = await cur.fetchone()
        if row is None:
            return None
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(RateRow)) as cur:
            await cur.execute(
                "SELECT start_local, end_local, p_per_kwh FROM tariff_rates WHERE tariff_id = %s "
                "ORDER BY start_local",
                (tariff_id,),
            )
            return replace(row, rates=tuple(await cur.fetchall()))

    async def assign(self, site_id: uuid.UUID, direction: str, tariff_id: uuid.UUID) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO site_tariffs (site_id, direction, tariff_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (site_id, direction) DO UPDATE SET tariff_id = EXCLUDED.tariff_id",
                (site_id, direction, tariff_id),
            )

    async def upsert_prices(
        self,
        market: str,
        region: str,
        direction: str,
        points: list[tuple[datetime, datetime, float]],
        published_at: datetime,
        currency: str = "GBP",
    ) -> int:
        """``points`` in the minor unit of ``currency`` per kWh (pence, cents)."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO prices (market, region, direction, start_at, end_at, p_per_kwh, published_at, currency) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (market, region, direction, start_at) DO UPDATE "
                "SET end_at = EXCLUDED.end_at, p_per_kwh = EXCLUDED.p_per_kwh, published_at = EXCLUDED.published_at, "
                "currency = EXCLUDED.currency",
                [(market, region, direction, s, e, p, published_at, currency) for s, e, p in points],
            )
        return len(points)

    async def sites_on_market(self, market: str, region: str, direction: str) -> list[uuid.UUID]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT st.site_id FROM site_tariffs st JOIN tariffs t USING (tariff_id) "
                f"JOIN {REGISTERED_SITES} ON s.site_id = st.site_id WHERE t.kind = 'dynamic' "
                "AND t.market = %s AND t.region = %s AND t.direction = %s",
                (market, region, direction),
            )
            return [r[0] for r in await cur.fetchall()]

    # --- a plan batch's reads, on its connection ------------------------------------------------------
    @staticmethod
    async def of_sites(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID]
    ) -> dict[tuple[uuid.UUID, str], SiteTariff]:
        """Each site's tariff per direction, with the rates of time-of-use ones (two queries in all)."""
        async with conn.cursor(row_factory=class_row(SiteTariff)) as cur:
            await cur.execute(
                "SELECT st.site_id, st.direction, t.tariff_id, t.kind, t.fixed_p_per_kwh, t.market, t.region, "
                "t.standing_charge_p_per_day, t.currency FROM site_tariffs st JOIN tariffs t USING (tariff_id) "
                "WHERE st.site_id = ANY(%s)",
                (list(site_ids),),
            )
            rows = await cur.fetchall()
        tou = list({r.tariff_id for r in rows if r.kind == "time_of_use"})
        rates: dict[uuid.UUID, list[RateRow]] = {t: [] for t in tou}
        if tou:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(
                    "SELECT tariff_id, start_local, end_local, p_per_kwh FROM tariff_rates "
                    "WHERE tariff_id = ANY(%s) ORDER BY tariff_id, start_local",
                    (tou,),
                )
                for tariff_id, a, b, p in await cur.fetchall():
                    rates[tariff_id].append(RateRow(a, b, p))
        return {(r.site_id, r.direction): replace(r, rates=tuple(rates.get(r.tariff_id, ()))) for r in rows}

    @staticmethod
    async def known_prices(
        conn: AsyncConnection[Any],
        market: str,
        region: str,
        direction: str,
        start: datetime,
        end: datetime,
        currency: str,
    ) -> dict[datetime, float]:
        """Known prices in ``currency`` (a tariff is planned only from prices in its own currency)."""
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT start_at, p_per_kwh FROM prices WHERE market = %s AND region = %s AND direction = %s "
                "AND start_at >= %s AND start_at < %s AND currency = %s ORDER BY start_at",
                (market, region, direction, start, end, currency),
            )
            return dict(await cur.fetchall())
