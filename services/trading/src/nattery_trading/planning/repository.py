"""SQL for the trading domain (schema ``trading``; the pool's search_path is set to it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from nattery_trading.forecasting.site import Actuals

Row = dict[str, Any]
# The connection holding the current task's site lock (``Repository.site_lock``), for its reads.
_LOCK_CONNECTION: ContextVar[AsyncConnection[Any] | None] = ContextVar(
    "trading_lock_connection", default=None
)


class _DuplicateJob(Exception):
    """A job key already made a schedule version (a redelivered job)."""


# ``sites s`` limited to configurations made by the org the site is registered to.
REGISTERED_SITES = "sites s JOIN registered_sites r ON r.site_id = s.site_id AND r.org_id = s.org_id"

SITE_FIELDS = (
    "timezone",
    "capacity_kwh",
    "max_charge_kw",
    "max_discharge_kw",
    "charge_efficiency",
    "discharge_efficiency",
    "soc_min_pct",
    "soc_max_pct",
    "degradation_p_per_kwh",
    "import_limit_kw",
    "export_limit_kw",
)


class Repository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _connection(self, sql: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection; a SELECT inside ``site_lock`` runs on the lock's own connection, in its
        open transaction: a plan's ~10 reads then cost no pool checkout and no COMMIT each (bench-trading:
        a fleet re-plan is 10,000 plans). Writes always take a connection (and transaction) of their own."""
        conn = _LOCK_CONNECTION.get()
        if conn is not None and sql.lstrip()[:6].upper() == "SELECT":
            yield conn
            return
        async with self.pool.connection() as pooled:
            yield pooled

    async def _one(self, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> Row | None:
        async with self._connection(sql) as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> list[Row]:
        async with self._connection(sql) as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()

    # --- sites ------------------------------------------------------------------------------------
    async def upsert_site(self, org_id: uuid.UUID, site_id: uuid.UUID, fields: dict[str, Any]) -> Row | None:
        """Configure a site's battery; None (nothing written) unless the site is registered to ``org_id``
        in ``registered_sites`` and not configured by another org. The registry row is share-locked so
        its org cannot change before this commits."""
        cols = ", ".join(SITE_FIELDS)
        vals = ", ".join(f"%({f})s" for f in SITE_FIELDS)
        sets = ", ".join(f"{f} = EXCLUDED.{f}" for f in SITE_FIELDS)
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "SELECT 1 FROM registered_sites WHERE site_id = %s AND org_id = %s FOR SHARE",
                (site_id, org_id),
            )
            if await cur.fetchone() is None:
                return None
            await cur.execute(
                f"INSERT INTO sites (site_id, org_id, {cols}) VALUES (%(site_id)s, %(org_id)s, {vals}) "
                f"ON CONFLICT (site_id) DO UPDATE SET {sets}, updated_at = now() "
                "WHERE sites.org_id = EXCLUDED.org_id RETURNING *",
                {"site_id": site_id, "org_id": org_id, **fields},
            )
            return await cur.fetchone()

    async def get_site(self, site_id: uuid.UUID) -> Row | None:
        """The site's configuration, while the site is registered to the org that configured it (a
        configuration left by another org, see README "Sites and orgs", is neither served nor planned)."""
        return await self._one(f"SELECT s.* FROM {REGISTERED_SITES} WHERE s.site_id = %s", (site_id,))

    async def set_soc(self, site_id: uuid.UUID, soc_pct: float, at: datetime) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE sites SET soc_pct = %s, soc_at = %s WHERE site_id = %s", (soc_pct, at, site_id)
            )

    # --- strategies -------------------------------------------------------------------------------
    async def set_strategy(self, site_id: uuid.UUID, s: dict[str, Any], by: str) -> Row | None:
        return await self._one(
            "INSERT INTO strategies (site_id, kind, reserve_soc_pct, demand_charge_p_per_kw, billed_peak_kw, "
            "windows, horizon_h, updated_by) VALUES (%(site_id)s, %(kind)s, %(reserve_soc_pct)s, "
            "%(demand_charge_p_per_kw)s, %(billed_peak_kw)s, %(windows)s, %(horizon_h)s, %(by)s) "
            "ON CONFLICT (site_id) DO UPDATE SET kind = EXCLUDED.kind, reserve_soc_pct = EXCLUDED.reserve_soc_pct, "
            "demand_charge_p_per_kw = EXCLUDED.demand_charge_p_per_kw, billed_peak_kw = EXCLUDED.billed_peak_kw, "
            "windows = EXCLUDED.windows, horizon_h = EXCLUDED.horizon_h, updated_by = EXCLUDED.updated_by, "
            "updated_at = now() RETURNING *",
            {**s, "site_id": site_id, "windows": json.dumps(s.get("windows", [])), "by": by},
        )

    async def get_strategy(self, site_id: uuid.UUID) -> Row | None:
        return await self._one("SELECT * FROM strategies WHERE site_id = %s", (site_id,))

    # --- tariffs and prices -----------------------------------------------------------------------
    async def create_tariff(self, org_id: uuid.UUID, t: dict[str, Any]) -> Row:
        tariff_id = uuid.uuid4()
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                "INSERT INTO tariffs (tariff_id, org_id, name, direction, kind, fixed_p_per_kwh, market, region, "
                "standing_charge_p_per_day, currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
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
            for r in t.get("rates", []):
                await cur.execute(
                    "INSERT INTO tariff_rates (tariff_id, start_local, end_local, p_per_kwh) VALUES (%s, %s, %s, %s)",
                    (tariff_id, r["start_local"], r["end_local"], r["p_per_kwh"]),
                )
        row["rates"] = t.get("rates", [])
        return row

    async def list_tariffs(self, org_id: uuid.UUID) -> list[Row]:
        return await self._all("SELECT * FROM tariffs WHERE org_id = %s ORDER BY created_at", (org_id,))

    async def get_tariff(self, tariff_id: uuid.UUID) -> Row | None:
        row = await self._one("SELECT * FROM tariffs WHERE tariff_id = %s", (tariff_id,))
        if row is not None:
            row["rates"] = await self._all(
                "SELECT start_local, end_local, p_per_kwh FROM tariff_rates WHERE tariff_id = %s "
                "ORDER BY start_local",
                (tariff_id,),
            )
        return row

    async def set_site_tariff(self, site_id: uuid.UUID, direction: str, tariff_id: uuid.UUID) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO site_tariffs (site_id, direction, tariff_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (site_id, direction) DO UPDATE SET tariff_id = EXCLUDED.tariff_id",
                (site_id, direction, tariff_id),
            )

    async def site_tariff(self, site_id: uuid.UUID, direction: str) -> Row | None:
        """The site's tariff in ``direction`` (one query; the rates only for a time-of-use tariff: this
        runs twice for every site of a fleet re-plan)."""
        row = await self._one(
            "SELECT t.* FROM site_tariffs st JOIN tariffs t USING (tariff_id) "
            "WHERE st.site_id = %s AND st.direction = %s",
            (site_id, direction),
        )
        if row is None:
            return None
        row["rates"] = (
            await self._all(
                "SELECT start_local, end_local, p_per_kwh FROM tariff_rates WHERE tariff_id = %s "
                "ORDER BY start_local",
                (row["tariff_id"],),
            )
            if row["kind"] == "time_of_use"
            else []
        )
        return row

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

    async def prices(
        self, market: str, region: str, direction: str, start: datetime, end: datetime, currency: str = "GBP"
    ) -> dict[datetime, float]:
        """Known prices in ``currency`` (a tariff is planned only from prices in its own currency)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT start_at, p_per_kwh FROM prices WHERE market = %s AND region = %s AND direction = %s "
                "AND start_at >= %s AND start_at < %s AND currency = %s ORDER BY start_at",
                (market, region, direction, start, end, currency),
            )
            return dict(await cur.fetchall())

    async def sites_on_market(self, market: str, region: str, direction: str) -> list[uuid.UUID]:
        rows = await self._all(
            "SELECT st.site_id FROM site_tariffs st JOIN tariffs t USING (tariff_id) "
            f"JOIN {REGISTERED_SITES} ON s.site_id = st.site_id WHERE t.kind = 'dynamic' "
            "AND t.market = %s AND t.region = %s AND t.direction = %s",
            (market, region, direction),
        )
        return [r["site_id"] for r in rows]

    # --- forecasts, dispatches ----------------------------------------------------------------------
    async def upsert_forecast(
        self, site_id: uuid.UUID, model: str, points: list[tuple[datetime, datetime, float | None, float]]
    ) -> None:
        """A point without load (a PV-only forecast) keeps the load a previous forecast gave."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO forecasts (site_id, start_at, end_at, load_kw, pv_kw, model) VALUES "
                "(%s, %s, %s, %s, %s, %s) ON CONFLICT (site_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at, "
                "load_kw = COALESCE(EXCLUDED.load_kw, forecasts.load_kw), pv_kw = EXCLUDED.pv_kw, "
                "model = EXCLUDED.model, received_at = now()",
                [(site_id, s, e, lo, pv, model) for s, e, lo, pv in points],
            )

    async def forecast(self, site_id: uuid.UUID, start: datetime, end: datetime) -> list[Row]:
        return await self._all(
            "SELECT start_at, end_at, load_kw, pv_kw, model FROM forecasts WHERE site_id = %s AND end_at > %s "
            "AND start_at < %s ORDER BY start_at",
            (site_id, start, end),
        )

    async def insert_dispatch(self, d: dict[str, Any]) -> bool:
        row = await self._one(
            "INSERT INTO dispatches (dispatch_id, org_id, site_id, provider, battery_power_kw, start_at, end_at, "
            "status, reason) VALUES (%(dispatch_id)s, %(org_id)s, %(site_id)s, %(provider)s, %(battery_power_kw)s, "
            "%(start_at)s, %(end_at)s, %(status)s, %(reason)s) ON CONFLICT (dispatch_id) DO NOTHING RETURNING 1",
            d,
        )
        return row is not None

    async def active_dispatches(self, site_id: uuid.UUID, start: datetime, end: datetime) -> list[Row]:
        return await self._all(
            "SELECT * FROM dispatches WHERE site_id = %s AND status = 'accepted' AND end_at > %s AND start_at < %s "
            "ORDER BY start_at",
            (site_id, start, end),
        )

    async def finish_dispatches(self, now: datetime) -> list[Row]:
        """Accepted dispatches whose window has passed become executed (returned once)."""
        return await self._all(
            "UPDATE dispatches SET status = 'executed' WHERE status = 'accepted' AND end_at <= %s RETURNING *",
            (now,),
        )

    # --- emergency stops ------------------------------------------------------------------------------
    async def active_stop(self, org_id: uuid.UUID, site_id: uuid.UUID) -> Row | None:
        return await self._one(
            "SELECT * FROM emergency_stops WHERE org_id = %s AND released_at IS NULL AND "
            "(site_id IS NULL OR site_id = %s) ORDER BY created_at LIMIT 1",
            (org_id, site_id),
        )

    async def create_stop(self, org_id: uuid.UUID, site_id: uuid.UUID | None, reason: str, by: str) -> Row:
        row = await self._one(
            "INSERT INTO emergency_stops (stop_id, org_id, site_id, reason, created_by) VALUES (%s, %s, %s, %s, %s) "
            "RETURNING *",
            (uuid.uuid4(), org_id, site_id, reason, by),
        )
        assert row is not None
        return row

    async def release_stop(self, org_id: uuid.UUID, stop_id: uuid.UUID, by: str) -> Row | None:
        return await self._one(
            "UPDATE emergency_stops SET released_at = now(), released_by = %s WHERE stop_id = %s AND org_id = %s "
            "AND released_at IS NULL RETURNING *",
            (by, stop_id, org_id),
        )

    async def list_stops(self, org_id: uuid.UUID, active_only: bool) -> list[Row]:
        extra = " AND released_at IS NULL" if active_only else ""
        return await self._all(
            f"SELECT * FROM emergency_stops WHERE org_id = %s{extra} ORDER BY created_at DESC", (org_id,)
        )

    async def sites_due(self, before: datetime) -> list[tuple[uuid.UUID, int]]:
        """Sites with an import tariff whose latest schedule expires before ``before`` (or have none),
        with the version of that latest schedule (0 when none)."""
        rows = await self._all(
            f"""
            SELECT s.site_id, coalesce(latest.version, 0) AS version FROM {REGISTERED_SITES}
            JOIN site_tariffs st ON st.site_id = s.site_id AND st.direction = 'import'
            LEFT JOIN LATERAL (
                SELECT valid_until, version FROM schedules sc WHERE sc.site_id = s.site_id
                ORDER BY version DESC LIMIT 1
            ) latest ON true
            WHERE latest.valid_until IS NULL OR latest.valid_until < %s
            ORDER BY s.site_id
            """,
            (before,),
        )
        return [(r["site_id"], int(r["version"])) for r in rows]

    async def sites_of_org(self, org_id: uuid.UUID) -> list[uuid.UUID]:
        return [
            r["site_id"]
            for r in await self._all(
                f"SELECT s.site_id FROM {REGISTERED_SITES} WHERE s.org_id = %s", (org_id,)
            )
        ]

    # --- schedules ----------------------------------------------------------------------------------
    async def insert_schedule(
        self, head: dict[str, Any], slots: list[dict[str, Any]], job: dict[str, Any] | None = None
    ) -> int | None:
        """Store a new version; with ``job`` (job_key, trigger, worker) also the job that made it, in the
        same transaction. Returns None (and stores nothing) when that job key is already stored."""
        try:
            return await self._insert_schedule(head, slots, job)
        except _DuplicateJob:
            return None

    async def _insert_schedule(
        self, head: dict[str, Any], slots: list[dict[str, Any]], job: dict[str, Any] | None
    ) -> int:
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s::text))", (str(head["schedule_id"]),))
            await cur.execute(
                "SELECT coalesce(max(version), 0) + 1 AS v FROM schedules WHERE schedule_id = %s",
                (head["schedule_id"],),
            )
            row = await cur.fetchone()
            assert row is not None
            version = int(row["v"])
            await cur.execute(
                "INSERT INTO schedules (schedule_id, version, org_id, site_id, valid_until, trigger, status, method, "
                "objective_p, relaxations, forecast) VALUES (%(schedule_id)s, %(version)s, %(org_id)s, %(site_id)s, "
                "%(valid_until)s, %(trigger)s, %(status)s, %(method)s, %(objective_p)s, %(relaxations)s, "
                "%(forecast)s)",
                {
                    **head,
                    "version": version,
                    "relaxations": json.dumps(head["relaxations"]),
                    "forecast": json.dumps(head.get("forecast", {})),
                },
            )
            if job is not None:
                await cur.execute(
                    "INSERT INTO plan_jobs (job_key, site_id, schedule_id, version, trigger, worker) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_key) DO NOTHING RETURNING 1",
                    (
                        job["job_key"],
                        head["site_id"],
                        head["schedule_id"],
                        version,
                        job["trigger"],
                        job["worker"],
                    ),
                )
                if await cur.fetchone() is None:
                    raise _DuplicateJob  # rolls the new version back
            # One statement for all slots (arrays unnested server-side), not one per slot: a fleet
            # re-plan stores 10,000 of these.
            await cur.execute(
                "INSERT INTO schedule_slots (schedule_id, version, start_at, end_at, mode, battery_power_kw, soc_pct, "
                "grid_kw, import_p_per_kwh, export_p_per_kwh, reason) SELECT %s, %s, * FROM unnest("
                "%s::timestamptz[], %s::timestamptz[], %s::text[], %s::float8[], %s::float8[], %s::float8[], "
                "%s::float8[], %s::float8[], %s::text[])",
                (
                    head["schedule_id"],
                    version,
                    *(
                        [slot[c] for slot in slots]
                        for c in (
                            "start_at",
                            "end_at",
                            "mode",
                            "battery_power_kw",
                            "soc_pct",
                            "grid_kw",
                            "import_p_per_kwh",
                            "export_p_per_kwh",
                            "reason",
                        )
                    ),
                ),
            )
        return version

    async def plan_job(self, key: uuid.UUID) -> Row | None:
        return await self._one("SELECT * FROM plan_jobs WHERE job_key = %s", (key,))

    async def mark_published(self, key: uuid.UUID) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE plan_jobs SET published_at = now() WHERE job_key = %s", (key,))

    async def schedule_version(self, schedule_id: uuid.UUID, version: int) -> tuple[Row, list[Row]] | None:
        head = await self._one(
            "SELECT * FROM schedules WHERE schedule_id = %s AND version = %s", (schedule_id, version)
        )
        if head is None:
            return None
        slots = await self._all(
            "SELECT * FROM schedule_slots WHERE schedule_id = %s AND version = %s ORDER BY start_at",
            (schedule_id, version),
        )
        return head, slots

    @asynccontextmanager
    async def site_lock(self, site_id: uuid.UUID) -> AsyncIterator[None]:
        """Serialise planning of one site across workers and replicas (transaction-level advisory lock,
        held on a connection of its own until the block ends)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"trading.plan:{site_id}",))
            token = _LOCK_CONNECTION.set(conn)
            try:
                yield
            finally:
                _LOCK_CONNECTION.reset(token)

    async def latest_schedule(self, site_id: uuid.UUID) -> tuple[Row, list[Row]] | None:
        head = await self._one(
            "SELECT * FROM schedules WHERE site_id = %s ORDER BY version DESC LIMIT 1", (site_id,)
        )
        if head is None:
            return None
        slots = await self._all(
            "SELECT * FROM schedule_slots WHERE schedule_id = %s AND version = %s ORDER BY start_at",
            (head["schedule_id"], head["version"]),
        )
        return head, slots

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
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO actuals (site_id, start_at, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (site_id, start_at) DO UPDATE SET battery_power_kw = EXCLUDED.battery_power_kw, "
                "soc_pct = EXCLUDED.soc_pct, grid_kw = EXCLUDED.grid_kw, load_kw = EXCLUDED.load_kw, "
                "pv_kw = EXCLUDED.pv_kw",
                (site_id, start, battery_power_kw, soc_pct, grid_kw, load_kw, pv_kw),
            )

    async def actual_history(self, site_id: uuid.UUID, start: datetime, end: datetime) -> Actuals:
        """Recorded load and PV in ``[start, end)`` (the baseline forecasts' history), as arrays: one row
        of three arrays, not ~1,300 rows of objects per site (this runs for every site of a re-plan)."""
        row = await self._one(
            "SELECT coalesce(array_agg((extract(epoch FROM start_at) * 1000000)::int8 ORDER BY start_at), '{}') "
            "AS t_us, coalesce(array_agg(load_kw ORDER BY start_at), '{}') AS load_kw, "
            "coalesce(array_agg(pv_kw ORDER BY start_at), '{}') AS pv_kw FROM actuals "
            "WHERE site_id = %s AND start_at >= %s AND start_at < %s AND (load_kw IS NOT NULL OR pv_kw IS NOT NULL)",
            (site_id, start, end),
        )
        assert row is not None  # an aggregate always answers one row
        return Actuals(
            np.array(row["t_us"], dtype=np.int64),
            np.array(row["load_kw"], dtype=np.float64),
            np.array(row["pv_kw"], dtype=np.float64),
        )

    async def planned_vs_actual(self, site_id: uuid.UUID, start: datetime, end: datetime) -> list[Row]:
        """Per slot: what the last schedule version made before the slot ended planned, and what happened."""
        return await self._all(
            """
            SELECT DISTINCT ON (ss.start_at) ss.start_at, ss.end_at, s.version, ss.mode,
                   ss.battery_power_kw AS planned_battery_power_kw, ss.soc_pct AS planned_soc_pct,
                   ss.reason, a.battery_power_kw AS actual_battery_power_kw, a.soc_pct AS actual_soc_pct,
                   a.grid_kw AS actual_grid_kw
            FROM schedule_slots ss
            JOIN schedules s USING (schedule_id, version)
            LEFT JOIN actuals a ON a.site_id = s.site_id AND a.start_at = ss.start_at
            WHERE s.site_id = %s AND ss.start_at >= %s AND ss.start_at < %s AND s.created_at < ss.end_at
            ORDER BY ss.start_at, s.version DESC
            """,
            (site_id, start, end),
        )
