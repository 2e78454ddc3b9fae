"""SQL of strategies (``strategies``: one per site)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool


@dataclass(frozen=True)
class StrategyRow:
    site_id: uuid.UUID
    kind: str
    reserve_soc_pct: float
    demand_charge_p_per_kw: float | None
    billed_peak_kw: float
    windows: list[dict[str, Any]]
    horizon_h: float
    updated_at: datetime
    updated_by: str


class StrategyRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def set(self, site_id: uuid.UUID, s: dict[str, Any], by: str) -> StrategyRow:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StrategyRow)) as cur:
            await cur.execute(
                "INSERT INTO strategies (site_id, kind, reserve_soc_pct, demand_charge_p_per_kw, billed_peak_kw, "
                "windows, horizon_h, updated_by) VALUES (%(site_id)s, %(kind)s, %(reserve_soc_pct)s, "
                "%(demand_charge_p_per_kw)s, %(billed_peak_kw)s, %(windows)s, %(horizon_h)s, %(by)s) "
                "ON CONFLICT (site_id) DO UPDATE SET kind = EXCLUDED.kind, "
                "reserve_soc_pct = EXCLUDED.reserve_soc_pct, demand_charge_p_per_kw = EXCLUDED.demand_charge_p_per_kw, "
                "billed_peak_kw = EXCLUDED.billed_peak_kw, windows = EXCLUDED.windows, "
                "horizon_h = EXCLUDED.horizon_h, updated_by = EXCLUDED.updated_by, updated_at = now() RETURNING *",
                {**s, "site_id": site_id, "windows": json.dumps(s.get("windows", [])), "by": by},
            )
            row = await cur.fetchone()
            assert row is not None
            return row

    async def get(self, site_id: uuid.UUID) -> StrategyRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(StrategyRow)) as cur:
            await cur.execute("SELECT * FROM strategies WHERE site_id = %s", (site_id,))
            return await cur.fetchone()

    @staticmethod
    async def of_sites(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, StrategyRow]:
        """A plan batch's strategies, on its connection."""
        async with conn.cursor(row_factory=class_row(StrategyRow)) as cur:
            await cur.execute("SELECT * FROM strategies WHERE site_id = ANY(%s)", (list(site_ids),))
            return {r.site_id: r for r in await cur.fetchall()}
