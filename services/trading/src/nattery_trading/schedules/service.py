"""Planning rules: plan sites, store each new schedule version and announce it.

Every re-plan (price update, forecast update, dispatch, strategy change, manual request, e-stop) makes a
new version of the site's schedule (one ``schedule_id`` per site). The published schedule covers
``[now, valid_until)`` only, so a stale schedule expires and the bridge falls back to its safe default
program (ARCHITECTURE §4). An active emergency stop (site or whole org) publishes a hold schedule until
it is released.

Re-plans are jobs of many sites on the ``trading.site_plans`` work queue (``queue.py``); a worker plans
a job's sites together: their locks in one transaction, one query per kind of row for all of them
(``inputs.py``), one solve each, their versions, jobs and announcements stored together (COPY and the
outbox), then the announcements published.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from nattery_contracts.events import CloudEvent, EventType, ForecastUpdated, SchedulePublished, make_event
from nattery_contracts.mqtt import BatteryMode, ScheduleSlot
from nattery_shared.errors import NatteryError, NotFound
from nattery_shared.rabbit import EventBus, event_source
from nattery_shared.retry import RetryLoop
from nattery_trading import outbox
from nattery_trading.dispatches import announcements
from nattery_trading.dispatches.repository import DispatchRepository, DispatchRow
from nattery_trading.forecasting import Forecaster
from nattery_trading.measured.repository import MeasuredStates
from nattery_trading.optimiser import Plan, PlanInput, solve
from nattery_trading.optimiser.idle import idle_plan
from nattery_trading.optimiser.instruction import slot_modes
from nattery_trading.outbox import OutboxRelay
from nattery_trading.schedules.inputs import PlanInputs, floor_slot
from nattery_trading.schedules.queue import JOB_MAX_SITES, PlanJob, SitePlanQueue, job_key, plan_jobs
from nattery_trading.schedules.repository import (
    NewSchedule,
    PlanJobRow,
    PlannedVsActualRow,
    ScheduleRepository,
    ScheduleVersion,
    SlotColumns,
)
from nattery_trading.schedules.schemas import ActualIn
from nattery_trading.sites.repository import SiteConfig, SiteRepository

log = logging.getLogger(__name__)
SCHEDULE_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-4c7a-9d7e-2b1f0c8e5a11")
EVENT_NAMESPACE = uuid.UUID("9c2e7d1a-3f4b-4e8a-b5c6-1d2e3f4a5b6c")
SOURCE = event_source("trading")
# A schedule expiring within this margin is due for a refresh (periodic re-plan); a stopped site whose
# hold schedule is valid beyond it drops queued jobs instead of publishing another hold.
REPLAN_MARGIN = timedelta(minutes=45)
REPEAT_DUE_S = 600.0

# Per (site, job key) of a batch: the stored version, None (the job was done already, or the site is
# stopped and held), or what kept the site from being planned.
PlanOutcome = ScheduleVersion | None | Exception


def schedule_id_for(site_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(SCHEDULE_NAMESPACE, str(site_id))


class PlanningService:
    def __init__(
        self,
        repo: ScheduleRepository,
        bus: EventBus | None,
        *,
        slot_minutes: int = 30,
        schedule_validity_h: float = 2.0,
        queue: SitePlanQueue | None = None,
        worker_name: str | None = None,
        drift_soc_pct: float = 10.0,
        forecast_history_days: float = 28.0,
        load_forecaster: Forecaster | None = None,
        pv_forecaster: Forecaster | None = None,
        measured_state_max_age_s: float = 300.0,
        job_max_sites: int = JOB_MAX_SITES,
    ) -> None:
        self.repo = repo
        self.sites = SiteRepository(repo.pool)
        self.dispatches = DispatchRepository(repo.pool)
        self.measured = MeasuredStates(repo.pool)
        self.inputs = PlanInputs(
            slot_minutes=slot_minutes,
            forecast_history_days=forecast_history_days,
            measured_state_max_age_s=measured_state_max_age_s,
            load_forecaster=load_forecaster,
            pv_forecaster=pv_forecaster,
        )
        self.bus = bus
        # Announcements are stored in the outbox with the change they announce and published after the
        # commit (at once by ``flush``; the service's relay retries what that could not publish). Without
        # a bus (tools, unit tests) nothing is announced.
        self.relay = OutboxRelay(repo.pool, bus) if bus is not None else None
        self.slot_minutes = slot_minutes
        self.validity = timedelta(hours=schedule_validity_h)
        # Re-plans go to the work queue; without one (tools, unit tests) they run here and now.
        self.queue = queue
        self.job_max_sites = job_max_sites
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.drift_soc_pct = drift_soc_pct
        # A batch holds one pooled connection for its sites' locks, and publishing its announcements
        # another after: bound the batches running at once so they never take every connection.
        max_size = int(getattr(repo.pool, "max_size", 10))
        self._running = asyncio.Semaphore(max(1, min(4, (max_size - 2) // 2)))
        self._due_enqueued: dict[uuid.UUID, float] = {}  # periodic job key -> when enqueued (monotonic)

    # --- re-plans: enqueue jobs of many sites; a worker (any replica or fleet-worker) runs each -------
    async def request_replan(self, site_ids: Iterable[uuid.UUID], trigger: str, input_version: str) -> int:
        """Enqueue a re-plan of each site for this input version (the job key); returns sites enqueued.

        Without a queue (tools, unit tests) the jobs run here, one after another."""
        return await self._enqueue([(s, job_key(s, input_version)) for s in site_ids], trigger)

    async def _enqueue(
        self, keyed: Sequence[tuple[uuid.UUID, uuid.UUID]], trigger: str, now: datetime | None = None
    ) -> int:
        jobs = plan_jobs(keyed, trigger, max_sites=self.job_max_sites)
        if self.queue is not None:
            await self.queue.enqueue(jobs)
        else:
            for job in jobs:
                await self.run_job(job, now)
        return len(keyed)

    async def replan_sites(
        self, org_id: uuid.UUID, site_id: uuid.UUID | None, trigger: str, input_version: str
    ) -> int:
        sites = [site_id] if site_id is not None else await self.sites.of_org(org_id)
        return await self.request_replan(sites, trigger, input_version)

    async def run_job(self, job: PlanJob, now: datetime | None = None) -> None:
        """A worker's handler: plan, store and announce each site of the job once per job key. A site
        that cannot be planned (unknown, no tariff or prices yet) is not a retry: it is dropped with a
        warning, and the job's other sites are planned all the same. A database or broker failure fails
        the whole job (redelivered; the sites already done are then found by their keys)."""
        outcomes = await self.plan_sites(job.sites, job.trigger, now)
        for (site_id, key), outcome in zip(job.sites, outcomes, strict=True):
            if isinstance(outcome, NatteryError):
                log.warning("plan job %s (%s) for %s dropped: %s", key, job.trigger, site_id, outcome)
            elif isinstance(outcome, Exception):
                log.error("plan job %s (%s) for %s failed: %r", key, job.trigger, site_id, outcome)

    async def plan_site(
        self,
        site_id: uuid.UUID,
        trigger: str,
        now: datetime | None = None,
        *,
        key: uuid.UUID | None = None,
    ) -> ScheduleVersion | None:
        """Plan a site, store the new version and announce it; None when ``key`` was already done (a
        redelivered job: its version is re-announced if its announcement was never stored) or when the
        site is stopped and already held. Raises what kept the site from being planned."""
        (outcome,) = await self.plan_sites([(site_id, key or uuid.uuid4())], trigger, now)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def plan_many(
        self, keyed: Sequence[tuple[uuid.UUID, uuid.UUID]], trigger: str, now: datetime | None = None
    ) -> list[PlanOutcome]:
        """``plan_sites`` in batches of the job size, here and now (an emergency stop's holds)."""
        out: list[PlanOutcome] = []
        for i in range(0, len(keyed), self.job_max_sites):
            out += await self.plan_sites(keyed[i : i + self.job_max_sites], trigger, now)
        return out

    async def plan_sites(
        self,
        sites: Sequence[tuple[uuid.UUID, uuid.UUID]],
        trigger: str,
        now: datetime | None = None,
    ) -> list[PlanOutcome]:
        """Plan ``sites`` ((site, job key) pairs), store their new versions and announce them.

        Planning of a site is serialised (advisory lock, held for the whole batch) and the stop is
        checked under the lock, so a stopped site never gets a trading schedule after its hold, whichever
        worker runs the job. The versions, their jobs and their announcements (outbox) commit together
        as the locks are released; the announcements are then published at once."""
        outcomes: dict[uuid.UUID, PlanOutcome] = {}
        async with self._running, self.repo.locked([s for s, _ in sites]) as conn:
            done = await self.repo.done_jobs(conn, [k for _, k in sites])
            again: list[PlanJobRow] = []
            todo: list[tuple[uuid.UUID, uuid.UUID]] = []
            for site_id, key in sites:
                if key in done:
                    outcomes[key] = None
                    if done[key].published_at is None:
                        again.append(done[key])
                    log.info("plan job %s already done (version %s)", key, done[key].version)
                else:
                    todo.append((site_id, key))
            configs = await self.sites.many(conn, [s for s, _ in todo]) if todo else {}
            now = now or datetime.now(UTC)
            stops = await self.dispatches.active_stops_of(
                conn, [(c.org_id, c.site_id) for c in configs.values()]
            )
            heads = await self.repo.latest_heads(conn, list(stops)) if stops else {}
            plan: list[tuple[SiteConfig, uuid.UUID]] = []
            for site_id, key in todo:
                site = configs.get(site_id)
                if site is None:
                    outcomes[key] = NotFound(f"site {site_id} has no battery configured in trading")
                    continue
                head = heads.get(site_id)
                if (
                    site_id in stops
                    and head is not None
                    and head.method == "hold"
                    and head.valid_until > now + REPLAN_MARGIN
                ):
                    log.info("site %s is stopped and held: %s dropped", site_id, trigger)
                    outcomes[key] = None
                    continue
                plan.append((site, key))
            got = await self.inputs.read(conn, [s for s, _ in plan], now) if plan else None
            stored: list[NewSchedule] = []
            for site, key in plan:
                assert got is not None
                try:
                    stop = stops.get(site.site_id)
                    if stop is not None:
                        inp, forecast = self.inputs.build(got, site, prices_required=False)
                        planned = _hold_plan(
                            inp, f"holding: emergency stop by {stop.created_by} ({stop.reason})"
                        )
                    else:
                        inp, forecast = self.inputs.build(got, site)
                        # the batch's plans share prices, battery and strategy: one reference basis
                        planned = solve(inp, warm_start=True)
                    stored.append(self._new_schedule(site, inp, planned, trigger, now, forecast, key))
                except Exception as err:  # one site's bad input must not keep the others from planning
                    if not isinstance(err, NatteryError):
                        log.exception("planning site %s (%s) failed", site.site_id, trigger)
                    outcomes[key] = err
            await self.repo.store(conn, stored)
            versions = [(s.stored(), s.job_key) for s in stored]
            held: list[CloudEvent[Any]] = []
            if self.relay is not None:
                held = [announcement(v, key) for v, key in versions]
                await outbox.enqueue(conn, held)
                repeated = []
                for job in again:
                    version = await self.repo.version_of(conn, job.schedule_id, job.version)
                    if version is not None:
                        repeated.append(announcement(version, job.job_key))
                await outbox.enqueue_again(conn, repeated)
                await self.repo.mark_announced(conn, [j.job_key for j in again])
                held += repeated
            for v, key in versions:
                outcomes[key] = v
        await self.publish(held)
        return [outcomes.get(k) for _, k in sites]

    async def publish(self, events: list[CloudEvent[Any]]) -> None:
        """Publish the announcements a batch just committed to the outbox, as the batch holds them; the
        relay retries what fails here."""
        if self.relay is None or not events:
            return
        try:
            await self.relay.publish_held(events)
        except Exception as err:
            log.warning("announcements stay in the outbox for the relay: %r", err)
            self.relay.poke()

    async def flush(self) -> None:
        """Publish what was just committed to the outbox; the relay retries what fails here."""
        if self.relay is None:
            return
        try:
            await self.relay.flush()
        except Exception as err:
            log.warning("announcements stay in the outbox for the relay: %r", err)
            self.relay.poke()

    def _new_schedule(
        self,
        site: SiteConfig,
        inp: PlanInput,
        plan: Plan,
        trigger: str,
        now: datetime,
        forecast: dict[str, Any],
        key: uuid.UUID,
    ) -> NewSchedule:
        step = timedelta(minutes=inp.slot_minutes)
        valid_until = min(now + self.validity, inp.start + step * inp.slots)
        times = _slot_times(inp.start, inp.slot_minutes, inp.slots)
        reasons = plan.reasons
        if len(reasons) < inp.slots:
            reasons = [*reasons, *([""] * (inp.slots - len(reasons)))]
        slots = SlotColumns(
            start_at=times[:-1],
            end_at=times[1:],
            # the one slot -> edge instruction mapping, shared with the back-test
            mode=slot_modes(plan),
            battery_power_kw=plan.battery_power_kw.round(4).tolist(),
            soc_pct=plan.soc_pct.round(3).tolist(),
            grid_kw=plan.grid_kw.round(4).tolist(),
            import_p_per_kwh=np.asarray(inp.import_price_p_per_kwh, dtype=np.float64).tolist(),
            export_p_per_kwh=np.asarray(inp.export_price_p_per_kwh, dtype=np.float64).tolist(),
            reason=reasons[: inp.slots],
        )
        return NewSchedule(
            schedule_id=schedule_id_for(site.site_id),
            org_id=site.org_id,
            site_id=site.site_id,
            valid_until=valid_until,
            trigger=trigger,
            status=plan.status,
            method=plan.method,
            objective_p=None if math.isnan(plan.objective_p) else plan.objective_p,
            relaxations=[
                {"slot": r.slot, "kind": r.kind.value, "amount": r.amount, "reason": r.reason}
                for r in plan.relaxations
            ],
            forecast=forecast,
            job_key=key,
            worker=self.worker_name,
            slots=slots,
        )

    # --- reads for the API -----------------------------------------------------------------------------
    async def latest(self, site_id: uuid.UUID) -> ScheduleVersion | None:
        return await self.repo.latest_schedule(site_id)

    async def planned_vs_actual(
        self, site_id: uuid.UUID, start: datetime, end: datetime
    ) -> list[PlannedVsActualRow]:
        return await self.repo.planned_vs_actual(site_id, start, end)

    # --- provided forecasts ----------------------------------------------------------------------------
    async def store_forecast(self, data: ForecastUpdated) -> bool:
        """Store a ``forecast.updated`` of a site of the event's org (False, nothing stored, otherwise)."""
        site = await self.sites.get(data.site_id)
        if site is None or site.org_id != data.org_id:
            return False
        await self.repo.upsert_forecast(
            data.site_id, data.model, [(p.start, p.end, p.load_kw, p.pv_kw) for p in data.points]
        )
        return True

    # --- actuals and drift from plan ------------------------------------------------------------------
    async def record_actuals(self, site_id: uuid.UUID, actuals: Sequence[ActualIn]) -> None:
        """Store actuals posted through the API; the latest SOC among them becomes the site's posted SOC
        and, when off the plan by more than the drift threshold, re-plans the site."""
        for a in actuals:
            await self.measured.record_actual(
                site_id, a.start_at, a.battery_power_kw, a.soc_pct, a.grid_kw, a.load_kw, a.pv_kw
            )
        with_soc = [a for a in actuals if a.soc_pct is not None]
        if with_soc:
            last = max(with_soc, key=lambda a: a.start_at)
            assert last.soc_pct is not None
            await self.sites.set_soc(site_id, last.soc_pct, last.start_at)
            # drifted from plan → re-plan (through the work queue), judged on the latest reading
            await self.check_drift(site_id, last.start_at, last.soc_pct)

    async def check_drift(self, site_id: uuid.UUID, start_at: datetime, soc_pct: float) -> bool:
        """Re-plan when the measured SOC of a slot differs from the plan's by more than the threshold
        (percentage points). One job per slot and schedule version, however often it is reported."""
        start = floor_slot(start_at, self.slot_minutes)
        rows = await self.repo.planned_vs_actual(site_id, start, start + timedelta(minutes=self.slot_minutes))
        if not rows:
            return False
        planned = float(rows[0].planned_soc_pct)
        if abs(soc_pct - planned) <= self.drift_soc_pct:
            return False
        await self.request_replan(
            [site_id],
            f"drift: SOC {soc_pct:.1f}% vs planned {planned:.1f}% at {start:%Y-%m-%d %H:%M}Z",
            f"drift:{start.isoformat()}:v{rows[0].version}",
        )
        return True

    # --- the periodic refresh ------------------------------------------------------------------------
    async def replan_due(self, now: datetime | None = None, margin: timedelta = REPLAN_MARGIN) -> int:
        """Enqueue a re-plan of every site whose schedule expires within ``margin`` (or has none), and
        announce the dispatches whose window has ended.

        Run on a timer by every replica; a transaction-level advisory lock lets one replica do a tick
        while the others skip it (nothing assumes a single replica). The job key is the version being
        refreshed, so a site still waiting in the queue at the next tick is not planned twice."""
        now = now or datetime.now(UTC)
        async with self.repo.replan_tick() as mine:
            if not mine:
                return 0
            await self._announce_executed(now)
            due = await self.repo.sites_due(now + margin)
            keyed = [(s, job_key(s, f"periodic:v{version}")) for s, version in due]
            # A site that stays due under the same key (its job dropped: no prices yet) is enqueued again
            # every REPEAT_DUE_S, not at every tick (it logged a re-plan and a dropped job every minute).
            tick = time.monotonic()
            fresh = [(s, k) for s, k in keyed if tick - self._due_enqueued.get(k, -math.inf) >= REPEAT_DUE_S]
            self._due_enqueued = {k: self._due_enqueued.get(k, tick) for _, k in keyed}
            for _, k in fresh:
                self._due_enqueued[k] = tick
            if fresh:
                log.info("periodic re-plan: %d sites", len(fresh))
            return await self._enqueue(fresh, "periodic re-plan", now)

    async def _announce_executed(self, now: datetime) -> None:
        def executed(d: DispatchRow) -> CloudEvent[Any]:
            return announcements.executed(d, now)

        if await self.dispatches.finish(now, executed if self.relay is not None else None):
            await self.flush()

    async def run_periodic(self, interval_s: float) -> None:
        """Re-plan due sites every ``interval_s`` until cancelled; a failing tick is logged once and
        retried with back-off (the kit's loop), never fatal."""
        await RetryLoop(self.replan_due, name="periodic re-plan", every_s=interval_s, logger=log).run()


def announcement(v: ScheduleVersion, key: uuid.UUID) -> CloudEvent[Any]:
    """``schedule.published`` of a stored version; the event id follows from the job key, so a
    re-announcement carries the same id (consumers are idempotent by event id)."""
    head = v.head
    published = [
        ScheduleSlot(
            start=s.start_at,
            end=s.end_at,
            mode=BatteryMode(s.mode),
            battery_power_w=s.battery_power_kw * 1000.0,
            target_soc_pct=max(0.0, min(100.0, s.soc_pct)),
        )
        for s in v.slots_before(head.valid_until)
    ]
    data = SchedulePublished(
        schedule_id=head.schedule_id,
        version=head.version,
        org_id=head.org_id,
        site_id=head.site_id,
        slots=published,
        valid_until=head.valid_until,
    )
    return make_event(
        EventType.SCHEDULE_PUBLISHED, data, source=SOURCE, subject=str(head.site_id)
    ).model_copy(update={"id": uuid.uuid5(EVENT_NAMESPACE, str(key))})


@functools.lru_cache(maxsize=8)
def _slot_times(start: datetime, slot_minutes: int, slots: int) -> tuple[datetime, ...]:
    """Slot boundaries (every plan of a batch starts at the same slot)."""
    step = timedelta(minutes=slot_minutes)
    return tuple(start + step * i for i in range(slots + 1))


def _hold_plan(inp: PlanInput, reason: str) -> Plan:
    """An emergency stop's plan: the one idle plan, held."""
    return idle_plan(inp, status="emergency_stop", method="hold", reason=reason)
