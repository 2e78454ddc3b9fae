"""SQL of schedules (``schedules``, ``schedule_slots``: a new version per plan), the jobs that made
them (``plan_jobs``), provided forecasts (``forecasts``) and the planning locks."""

from __future__ import annotations

import struct
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nattery_trading.sites.repository import REGISTERED_SITES


@dataclass(frozen=True, slots=True)
class SlotRow:
    start_at: datetime
    end_at: datetime
    mode: str
    battery_power_kw: float
    soc_pct: float
    grid_kw: float
    import_p_per_kwh: float
    export_p_per_kwh: float
    reason: str


SLOT_COLUMNS = tuple(SlotRow.__dataclass_fields__)


@dataclass(frozen=True)
class SlotColumns:
    """A new version's slots as the columns the optimiser made them in (``SLOT_COLUMNS``, one entry a
    slot, in time order). A fleet re-plan stores and announces them as they are: a ``SlotRow`` each
    (~3 us) was a tenth of a plan's CPU, so rows are made only when someone reads them."""

    start_at: Sequence[datetime]
    end_at: Sequence[datetime]
    mode: Sequence[str]
    battery_power_kw: Sequence[float]
    soc_pct: Sequence[float]
    grid_kw: Sequence[float]
    import_p_per_kwh: Sequence[float]
    export_p_per_kwh: Sequence[float]
    reason: Sequence[str]

    def __len__(self) -> int:
        return len(self.mode)

    def rows(self) -> list[SlotRow]:
        return [
            SlotRow(*row)
            for row in zip(
                self.start_at,
                self.end_at,
                self.mode,
                self.battery_power_kw,
                self.soc_pct,
                self.grid_kw,
                self.import_p_per_kwh,
                self.export_p_per_kwh,
                self.reason,
                strict=True,
            )
        ]

    def rows_before(self, end: datetime) -> list[SlotRow]:
        """The slots starting before ``end`` (the published part of a version)."""
        n = 0
        while n < len(self.start_at) and self.start_at[n] < end:
            n += 1
        return SlotColumns(*(getattr(self, c)[:n] for c in SLOT_COLUMNS)).rows()


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule version's head (``schedules``)."""

    schedule_id: uuid.UUID
    version: int
    org_id: uuid.UUID
    site_id: uuid.UUID
    created_at: datetime
    valid_until: datetime
    trigger: str
    status: str
    method: str
    objective_p: float | None
    relaxations: list[dict[str, Any]]
    forecast: dict[str, Any]


class ScheduleVersion:
    """A stored version: its head and its slots (read back as rows, or a version just stored from its
    columns, made rows on first use)."""

    __slots__ = ("_columns", "_rows", "head")

    def __init__(
        self, head: ScheduleRow, slots: list[SlotRow] | None = None, *, columns: SlotColumns | None = None
    ) -> None:
        self.head = head
        self._rows = slots
        self._columns = columns

    @property
    def slots(self) -> list[SlotRow]:
        if self._rows is None:
            self._rows = self._columns.rows() if self._columns is not None else []
        return self._rows

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScheduleVersion):
            return NotImplemented
        return self.head == other.head and self.slots == other.slots

    __hash__ = None  # type: ignore[assignment]  # (mutable slots, as the dataclass it was)

    def __repr__(self) -> str:
        return f"ScheduleVersion(head={self.head!r}, slots={self.slots!r})"

    def slots_before(self, end: datetime) -> list[SlotRow]:
        """The slots starting before ``end``, in time order."""
        if self._rows is None and self._columns is not None:
            return self._columns.rows_before(end)
        return [s for s in self.slots if s.start_at < end]


@dataclass(frozen=True)
class PlanJobRow:
    job_key: uuid.UUID
    site_id: uuid.UUID
    schedule_id: uuid.UUID
    version: int
    trigger: str
    worker: str
    created_at: datetime
    published_at: datetime | None


@dataclass(frozen=True)
class ScheduleHeadRow:
    """What a plan needs of a site's latest version (is a stopped site's hold still valid?)."""

    site_id: uuid.UUID
    version: int
    method: str
    valid_until: datetime


@dataclass(frozen=True)
class ForecastRow:
    site_id: uuid.UUID
    start_at: datetime
    end_at: datetime
    load_kw: float | None
    pv_kw: float | None
    model: str


@dataclass(frozen=True)
class PlannedVsActualRow:
    start_at: datetime
    end_at: datetime
    version: int
    mode: str
    planned_battery_power_kw: float
    planned_soc_pct: float
    reason: str
    actual_battery_power_kw: float | None
    actual_soc_pct: float | None
    actual_grid_kw: float | None


@dataclass
class NewSchedule:
    """A schedule version to store: its head, its slots and the job that made it."""

    schedule_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    valid_until: datetime
    trigger: str
    status: str
    method: str
    objective_p: float | None
    relaxations: list[dict[str, Any]]
    forecast: dict[str, Any]
    job_key: uuid.UUID
    worker: str
    slots: SlotColumns
    version: int = 0  # numbered when stored
    created_at: datetime | None = None  # set when stored

    def stored(self) -> ScheduleVersion:
        assert self.created_at is not None
        head = ScheduleRow(
            self.schedule_id,
            self.version,
            self.org_id,
            self.site_id,
            self.created_at,
            self.valid_until,
            self.trigger,
            self.status,
            self.method,
            self.objective_p,
            self.relaxations,
            self.forecast,
        )
        return ScheduleVersion(head, columns=self.slots)


# column types of the binary COPYs
_SCHEDULE_TYPES = [
    "uuid", "int4", "uuid", "uuid", "timestamptz", "timestamptz", "text", "text", "text", "float8", "jsonb", "jsonb",
]  # fmt: skip
_PLAN_JOB_TYPES = ["uuid", "uuid", "uuid", "int4", "text", "text", "timestamptz", "timestamptz"]
# schedule_slots' binary COPY, made here (``slots_copy_data``): psycopg's ``write_row`` dumps each
# value of each row through its adapters (the schedule's uuid 72 times a site), ~0.3 ms a site of a
# fleet re-plan; these rows differ in a few floats and two short texts. Format: PostgreSQL's COPY
# BINARY (signature, then per row the field count and each field as a length and its send format).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_SLOT_HEAD = struct.Struct(">hi16sii")  # 11 fields; schedule_id (uuid); version (int4)
_SLOT_TIMES = struct.Struct(">iqiq")  # start_at, end_at (timestamptz: microseconds since 2000)
_SLOT_VALUES = struct.Struct(">ididididid")  # power, SOC, grid, import and export price (float8)
_LENGTH = struct.Struct(">i")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def slots_copy_data(schedules: Sequence[NewSchedule], encoding: str = "utf-8") -> bytes:
    """The ``COPY schedule_slots (schedule_id, version, SLOT_COLUMNS) FROM STDIN (FORMAT BINARY)`` data
    of ``schedules``' slots, whole (signature to trailer); texts in the connection's ``encoding``."""
    out = [_COPY_SIGNATURE]
    times: dict[tuple[datetime, datetime], bytes] = {}
    texts: dict[str, bytes] = {}
    for s in schedules:
        c = s.slots
        head = _SLOT_HEAD.pack(11, 16, s.schedule_id.bytes, 4, s.version)
        for start, end, mode, power, soc, grid, imp, exp_, reason in zip(
            c.start_at,
            c.end_at,
            c.mode,
            c.battery_power_kw,
            c.soc_pct,
            c.grid_kw,
            c.import_p_per_kwh,
            c.export_p_per_kwh,
            c.reason,
            strict=True,
        ):
            span = times.get((start, end))
            if span is None:
                span = times[start, end] = _SLOT_TIMES.pack(
                    8, (start - _PG_EPOCH) // _US, 8, (end - _PG_EPOCH) // _US
                )
            mode_b = texts.get(mode)
            if mode_b is None:
                encoded = mode.encode(encoding)
                mode_b = texts[mode] = _LENGTH.pack(len(encoded)) + encoded
            reason_b = reason.encode(encoding)
            out += (
                head,
                span,
                mode_b,
                _SLOT_VALUES.pack(8, power, 8, soc, 8, grid, 8, imp, 8, exp_),
                _LENGTH.pack(len(reason_b)),
                reason_b,
            )
    out.append(_COPY_TRAILER)
    return b"".join(out)


class ScheduleRepository:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    # --- reads of the API and the tools -------------------------------------------------------------
    async def latest_schedule(self, site_id: uuid.UUID) -> ScheduleVersion | None:
        async with self.pool.connection() as conn:
            async with conn.cursor(row_factory=class_row(ScheduleRow)) as cur:
                await cur.execute(
                    "SELECT schedule_id, version, org_id, site_id, created_at, valid_until, trigger, status, "
                    "method, objective_p, relaxations, forecast FROM schedules WHERE site_id = %s "
                    "ORDER BY version DESC LIMIT 1",
                    (site_id,),
                )
                head = await cur.fetchone()
            if head is None:
                return None
            return ScheduleVersion(head, await self._slots(conn, head.schedule_id, head.version))

    @staticmethod
    async def version_of(
        conn: AsyncConnection[Any], schedule_id: uuid.UUID, version: int
    ) -> ScheduleVersion | None:
        async with conn.cursor(row_factory=class_row(ScheduleRow)) as cur:
            await cur.execute(
                "SELECT schedule_id, version, org_id, site_id, created_at, valid_until, trigger, status, method, "
                "objective_p, relaxations, forecast FROM schedules WHERE schedule_id = %s AND version = %s",
                (schedule_id, version),
            )
            head = await cur.fetchone()
        if head is None:
            return None
        return ScheduleVersion(head, await ScheduleRepository._slots(conn, schedule_id, version))

    @staticmethod
    async def _slots(conn: AsyncConnection[Any], schedule_id: uuid.UUID, version: int) -> list[SlotRow]:
        async with conn.cursor(row_factory=class_row(SlotRow)) as cur:
            await cur.execute(
                f"SELECT {', '.join(SLOT_COLUMNS)} FROM schedule_slots WHERE schedule_id = %s AND version = %s "
                "ORDER BY start_at",
                (schedule_id, version),
            )
            return await cur.fetchall()

    async def plan_job(self, key: uuid.UUID) -> PlanJobRow | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(PlanJobRow)) as cur:
            await cur.execute("SELECT * FROM plan_jobs WHERE job_key = %s", (key,))
            return await cur.fetchone()

    async def sites_due(self, before: datetime) -> list[tuple[uuid.UUID, int]]:
        """Sites with an import tariff whose latest schedule expires before ``before`` (or have none),
        with the version of that latest schedule (0 when none)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                f"""
                SELECT s.site_id, coalesce(latest.version, 0) FROM {REGISTERED_SITES}
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
            return [(site, int(version)) for site, version in await cur.fetchall()]

    async def planned_vs_actual(
        self, site_id: uuid.UUID, start: datetime, end: datetime
    ) -> list[PlannedVsActualRow]:
        """Per slot: what the last schedule version made before the slot ended planned, and what happened."""
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(PlannedVsActualRow)) as cur,
        ):
            await cur.execute(
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
            return await cur.fetchall()

    # --- provided forecasts (forecast.updated) --------------------------------------------------------
    async def upsert_forecast(
        self,
        site_id: uuid.UUID,
        model: str,
        points: list[tuple[datetime, datetime, float | None, float | None]],
    ) -> None:
        """A point without load (integration's PV-only forecast) keeps the load a previous forecast gave, and
        a point without PV (analytics' load-only forecast) keeps the PV, so neither overwrites the other."""
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO forecasts (site_id, start_at, end_at, load_kw, pv_kw, model) VALUES "
                "(%s, %s, %s, %s, %s, %s) ON CONFLICT (site_id, start_at) DO UPDATE SET end_at = EXCLUDED.end_at, "
                "load_kw = COALESCE(EXCLUDED.load_kw, forecasts.load_kw), pv_kw = COALESCE(EXCLUDED.pv_kw, forecasts.pv_kw), "
                "model = EXCLUDED.model, received_at = now()",
                [(site_id, s, e, lo, pv, model) for s, e, lo, pv in points],
            )

    @staticmethod
    async def forecasts_of(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> dict[uuid.UUID, list[ForecastRow]]:
        async with conn.cursor(row_factory=class_row(ForecastRow)) as cur:
            await cur.execute(
                "SELECT site_id, start_at, end_at, load_kw, pv_kw, model FROM forecasts WHERE site_id = ANY(%s) "
                "AND end_at > %s AND start_at < %s ORDER BY site_id, start_at",
                (list(site_ids), start, end),
            )
            rows = await cur.fetchall()
        out: dict[uuid.UUID, list[ForecastRow]] = defaultdict(list)
        for r in rows:
            out[r.site_id].append(r)
        return out

    # --- locks ---------------------------------------------------------------------------------------
    @asynccontextmanager
    async def locked(self, site_ids: Sequence[uuid.UUID]) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in a transaction holding every site's planning lock (transaction-level advisory
        locks on ``trading.plan:<site>``) until the block ends: planning of a site is serialised across
        workers and replicas, and what the block writes commits as the locks are released. Taken in one
        order (by key), so two jobs never deadlock."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtext('trading.plan:' || s) AS k "
                "FROM unnest(%s::text[]) s ORDER BY k) keys",
                ([str(s) for s in site_ids],),
            )
            yield conn

    @asynccontextmanager
    async def replan_tick(self) -> AsyncIterator[bool]:
        """Whether this replica does the periodic re-plan tick: a transaction-level advisory lock held
        until the block ends (the other replicas get False meanwhile)."""
        async with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            await cur.execute("SELECT pg_try_advisory_xact_lock(hashtext('trading.replan_due'))")
            row = await cur.fetchone()
            yield bool(row and row[0])

    # --- a plan batch, on the locks' connection -------------------------------------------------------
    @staticmethod
    async def done_jobs(conn: AsyncConnection[Any], keys: Sequence[uuid.UUID]) -> dict[uuid.UUID, PlanJobRow]:
        async with conn.cursor(row_factory=class_row(PlanJobRow)) as cur:
            await cur.execute("SELECT * FROM plan_jobs WHERE job_key = ANY(%s)", (list(keys),))
            return {r.job_key: r for r in await cur.fetchall()}

    @staticmethod
    async def latest_heads(
        conn: AsyncConnection[Any], site_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, ScheduleHeadRow]:
        async with conn.cursor(row_factory=class_row(ScheduleHeadRow)) as cur:
            await cur.execute(
                "SELECT DISTINCT ON (site_id) site_id, version, method, valid_until FROM schedules "
                "WHERE site_id = ANY(%s) ORDER BY site_id, version DESC",
                (list(site_ids),),
            )
            return {r.site_id: r for r in await cur.fetchall()}

    @staticmethod
    async def store(conn: AsyncConnection[Any], schedules: Sequence[NewSchedule]) -> None:
        """Store new versions (numbered here, under the sites' locks) with their slots and jobs: a binary
        COPY into each table (a fleet re-plan stores tens of sites' slots per job: an INSERT of unnested
        arrays spent most of the job's time building array literals, a text COPY still 1.5 ms a site).
        The jobs are stored as announced: their announcements go to the outbox in the same transaction."""
        if not schedules:
            return
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT schedule_id, max(version) FROM schedules WHERE schedule_id = ANY(%s) GROUP BY schedule_id",
                ([s.schedule_id for s in schedules],),
            )
            latest: dict[uuid.UUID, int] = dict(await cur.fetchall())
            await cur.execute("SELECT now()")  # the transaction's time: COPY takes values, not now()
            row = await cur.fetchone()
            assert row is not None
            now: datetime = row[0]
            for s in schedules:
                s.version = int(latest.get(s.schedule_id) or 0) + 1
                s.created_at = now
                latest[s.schedule_id] = s.version  # (one site twice in a batch: consecutive versions)
            async with cur.copy(
                "COPY schedules (schedule_id, version, org_id, site_id, created_at, valid_until, trigger, status, "
                "method, objective_p, relaxations, forecast) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(_SCHEDULE_TYPES)
                for s in schedules:
                    await copy.write_row(
                        (
                            s.schedule_id,
                            s.version,
                            s.org_id,
                            s.site_id,
                            now,
                            s.valid_until,
                            s.trigger,
                            s.status,
                            s.method,
                            s.objective_p,
                            Jsonb(s.relaxations),
                            Jsonb(s.forecast),
                        )
                    )
            async with cur.copy(
                "COPY plan_jobs (job_key, site_id, schedule_id, version, trigger, worker, created_at, published_at) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(_PLAN_JOB_TYPES)
                for s in schedules:
                    await copy.write_row(
                        (s.job_key, s.site_id, s.schedule_id, s.version, s.trigger, s.worker, now, now)
                    )
            async with cur.copy(
                f"COPY schedule_slots (schedule_id, version, {', '.join(SLOT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                await copy.write(slots_copy_data(schedules, conn.info.encoding))

    @staticmethod
    async def mark_announced(conn: AsyncConnection[Any], keys: Sequence[uuid.UUID]) -> None:
        """Jobs whose announcement is now in the outbox (a re-announcement of an old job)."""
        if keys:
            await conn.execute(
                "UPDATE plan_jobs SET published_at = now() WHERE job_key = ANY(%s)", (list(keys),)
            )
