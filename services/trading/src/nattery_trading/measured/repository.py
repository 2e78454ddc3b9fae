"""SQL of what was measured: the newest state per site (``site_states``) and each slot's actuals
(``actuals``: folded from measured states, or posted through the API), the forecasts' history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.events import SiteStateMeasured
from nattery_shared.dedup import PROCESSED_EVENTS
from nattery_trading.forecasting.site import Actuals

Outcome = Literal["stored", "older", "unknown_site", "duplicate"]


@dataclass(frozen=True)
class SiteStateRow:
    """The newest measured state of a site (``site_states``)."""

    site_id: uuid.UUID
    org_id: uuid.UUID
    measured_at: datetime
    window_start: datetime
    window_end: datetime
    soc_pct: float | None
    battery_power_kw: float | None
    load_kw: float | None
    pv_kw: float | None
    grid_kw: float | None
    samples: int
    event_id: uuid.UUID
    received_at: datetime


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
            if not await PROCESSED_EVENTS.mark(conn, event_id, queue):
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

    async def latest(self, site_id: uuid.UUID) -> SiteStateRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(SiteStateRow)) as cur:
            await cur.execute("SELECT * FROM site_states WHERE site_id = %s", (site_id,))
            return await cur.fetchone()

    @staticmethod
    async def latest_of(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, SiteStateRow]:
        """A plan batch's measured states, on its connection."""
        async with conn.cursor(row_factory=class_row(SiteStateRow)) as cur:
            await cur.execute("SELECT * FROM site_states WHERE site_id = ANY(%s)", (list(site_ids),))
            return {r.site_id: r for r in await cur.fetchall()}

    # --- actuals ---------------------------------------------------------------------------------------
    async def record_actual(
        self,
        site_id: uuid.UUID,
        start: datetime,
        battery_power_kw: float,
        soc_pct: float | None,
        grid_kw: float | None,
        load_kw: float | None = None,
        pv_kw: float | None = None,
    ) -> None:
        """A slot's actuals posted through the API (they replace the slot's)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO actuals (site_id, start_at, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (site_id, start_at) DO UPDATE SET battery_power_kw = EXCLUDED.battery_power_kw, "
                "soc_pct = EXCLUDED.soc_pct, grid_kw = EXCLUDED.grid_kw, load_kw = EXCLUDED.load_kw, "
                "pv_kw = EXCLUDED.pv_kw",
                (site_id, start, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw),
            )

    @staticmethod
    async def histories(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> dict[uuid.UUID, Actuals]:
        """Recorded load and PV in ``[start, end)`` per site of a plan batch, as arrays: the baseline
        forecasts' history.

        One row a site whose three columns are the readings' values back to back, 8 bytes each as
        PostgreSQL sends them (``timestamptz_send``: microseconds since 2000; ``float8send``; NULL as
        NaN), made into arrays with one ``frombuffer`` each. Arrays (``array_agg``) cost PostgreSQL a
        send call per element and psycopg a Python float per element: ~0.35 ms of PostgreSQL CPU and
        ~0.3 ms of ours a site of a fleet re-plan (bench-trading). Unordered (the forecasts bin readings
        by time, whatever their order: sorting each site's weeks of rows cost PostgreSQL more than
        reading them); the three aggregates see the rows in the same order."""
        async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
            await cur.execute(
                "SELECT site_id, string_agg(timestamptz_send(start_at), ''), "
                f"string_agg(coalesce(float8send(load_kw), {_NAN}), ''), "
                f"string_agg(coalesce(float8send(pv_kw), {_NAN}), '') "
                "FROM actuals WHERE site_id = ANY(%s) AND start_at >= %s AND start_at < %s "
                "AND (load_kw IS NOT NULL OR pv_kw IS NOT NULL) GROUP BY site_id",
                (list(site_ids), start, end),
            )
            rows = await cur.fetchall()
        return {
            site: Actuals(
                np.frombuffer(t_us, ">i8").astype(np.int64) + _PG_EPOCH_US,
                np.frombuffer(load, ">f8").astype(np.float64),
                np.frombuffer(pv, ">f8").astype(np.float64),
            )
            for site, t_us, load, pv in rows
        }


# float8send of NaN (a NULL reading), and 2000-01-01 (PostgreSQL's epoch) in microseconds since 1970
_NAN = "'\\x7ff8000000000000'::bytea"
_PG_EPOCH_US = 946_684_800_000_000
