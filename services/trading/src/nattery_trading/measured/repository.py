"""SQL for measured site states (schema ``trading``): the newest state per site, and the slot's actuals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import SiteStateMeasured

Row = dict[str, Any]
Outcome = Literal["stored", "older", "unknown_site", "duplicate"]


def _kw(w: float | None) -> float | None:
    return None if w is None else w / 1000.0


def _fold(col: str) -> str:
    """A slot mean folded with a new interval's, weighted by seconds measured (NULLs keep the other)."""
    return (
        f"{col} = CASE WHEN EXCLUDED.{col} IS NULL THEN actuals.{col} "
        f"WHEN actuals.{col} IS NULL OR actuals.measured_s IS NULL THEN EXCLUDED.{col} "
        f"ELSE (actuals.{col} * actuals.measured_s + EXCLUDED.{col} * EXCLUDED.measured_s) "
        f"/ (actuals.measured_s + EXCLUDED.measured_s) END"
    )


class MeasuredStates:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def record(
        self, event_id: uuid.UUID, queue: str, s: SiteStateMeasured, slot_start: datetime
    ) -> Outcome:
        """Store a state and fold it into its slot's actuals, in one transaction with the event's id
        (a redelivery changes nothing). A site not configured in trading for the state's org is skipped."""
        measured_s = (s.window_end - s.window_start).total_seconds()
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "INSERT INTO processed_events (event_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                "RETURNING 1 AS new",
                (event_id, queue),
            )
            if await cur.fetchone() is None:
                return "duplicate"
            await cur.execute(
                "SELECT 1 FROM sites s JOIN registered_sites r ON r.site_id = s.site_id AND r.org_id = s.org_id "
                "WHERE s.site_id = %s AND s.org_id = %s",
                (s.site_id, s.org_id),
            )
            if await cur.fetchone() is None:
                return "unknown_site"
            values = {
                "site_id": s.site_id,
                "org_id": s.org_id,
                "measured_at": s.measured_at,
                "window_start": s.window_start,
                "window_end": s.window_end,
                "soc_pct": s.soc_pct,
                "battery_power_kw": _kw(s.battery_power_w),
                "load_kw": None if s.load_power_w is None else max(0.0, s.load_power_w / 1000.0),
                "pv_kw": None if s.pv_power_w is None else max(0.0, s.pv_power_w / 1000.0),
                "grid_kw": _kw(s.grid_power_w),
                "samples": s.samples,
                "event_id": event_id,
                "slot_start": slot_start,
                "measured_s": measured_s,
            }
            await cur.execute(
                "INSERT INTO site_states (site_id, org_id, measured_at, window_start, window_end, soc_pct, "
                "battery_power_kw, load_kw, pv_kw, grid_kw, samples, event_id) VALUES (%(site_id)s, %(org_id)s, "
                "%(measured_at)s, %(window_start)s, %(window_end)s, %(soc_pct)s, %(battery_power_kw)s, "
                "%(load_kw)s, %(pv_kw)s, %(grid_kw)s, %(samples)s, %(event_id)s) "
                "ON CONFLICT (site_id) DO UPDATE SET org_id = EXCLUDED.org_id, measured_at = EXCLUDED.measured_at, "
                "window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end, "
                "soc_pct = COALESCE(EXCLUDED.soc_pct, site_states.soc_pct), "
                "battery_power_kw = EXCLUDED.battery_power_kw, load_kw = EXCLUDED.load_kw, "
                "pv_kw = EXCLUDED.pv_kw, grid_kw = EXCLUDED.grid_kw, samples = EXCLUDED.samples, "
                "event_id = EXCLUDED.event_id, received_at = now() "
                "WHERE site_states.measured_at <= EXCLUDED.measured_at RETURNING 1 AS newer",
                values,
            )
            newer = await cur.fetchone() is not None
            if s.battery_power_w is not None:  # actuals need the battery's power (planned vs actual)
                await cur.execute(
                    "INSERT INTO actuals (site_id, start_at, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw, "
                    "measured_s) VALUES (%(site_id)s, %(slot_start)s, %(battery_power_kw)s, %(soc_pct)s, "
                    "%(grid_kw)s, %(load_kw)s, %(pv_kw)s, %(measured_s)s) ON CONFLICT (site_id, start_at) DO UPDATE "
                    f"SET {_fold('battery_power_kw')}, {_fold('grid_kw')}, {_fold('load_kw')}, {_fold('pv_kw')}, "
                    # the slot's SOC is the newest reading in it (the end-of-slot SOC the plan aims at)
                    "soc_pct = CASE WHEN %(newer)s THEN COALESCE(EXCLUDED.soc_pct, actuals.soc_pct) "
                    "ELSE COALESCE(actuals.soc_pct, EXCLUDED.soc_pct) END, "
                    "measured_s = COALESCE(actuals.measured_s, 0) + EXCLUDED.measured_s",
                    {**values, "newer": newer},
                )
            return "stored" if newer else "older"

    async def latest(self, site_id: uuid.UUID) -> Row | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM site_states WHERE site_id = %s", (site_id,))
            return await cur.fetchone()
