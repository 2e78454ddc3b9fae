"""Planning rules: gather what is known for a site, solve, keep the schedule, publish it.

Every re-plan (price update, forecast update, dispatch, strategy change, manual request, e-stop) makes a
new version of the site's schedule (one ``schedule_id`` per site). The published schedule covers
``[now, valid_until)`` only, so a stale schedule expires and the bridge falls back to its safe default
program (ARCHITECTURE §4). An active emergency stop (site or whole org) publishes a hold schedule until
it is released.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np

from nattery_contracts.events import (
    DispatchReceived,
    DispatchStatus,
    DispatchStatusChanged,
    EventType,
    SchedulePublished,
    make_event,
)
from nattery_contracts.mqtt import BatteryMode, ScheduleSlot
from nattery_shared.errors import NatteryError, NotFound, Unprocessable
from nattery_shared.rabbit import EventBus
from nattery_trading.fleet.site_plans import PlanJob, SitePlanQueue, job_key
from nattery_trading.forecasting import Forecaster, SameSlotLastWeeks, SameTimeLastDays
from nattery_trading.forecasting.site import site_forecast
from nattery_trading.measured.repository import MeasuredStates
from nattery_trading.measured.service import PlanStartSource
from nattery_trading.optimiser import (
    Battery,
    DemandCharge,
    Dispatch,
    Plan,
    PlanInput,
    Site,
    Strategy,
    TimeWindow,
    WindowMode,
    solve,
)
from nattery_trading.optimiser.instruction import slot_instruction
from nattery_trading.optimiser.model import StrategyKind
from nattery_trading.planning.repository import Repository, Row
from nattery_trading.tariffs.pricing import Tariff, TouRate, slot_prices

log = logging.getLogger(__name__)
SCHEDULE_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-4c7a-9d7e-2b1f0c8e5a11")
EVENT_NAMESPACE = uuid.UUID("9c2e7d1a-3f4b-4e8a-b5c6-1d2e3f4a5b6c")
SOURCE = "nattery/trading"
# A schedule expiring within this margin is due for a refresh (periodic re-plan); a stopped site whose
# hold schedule is valid beyond it drops queued jobs instead of publishing another hold.
REPLAN_MARGIN = timedelta(minutes=45)


def schedule_id_for(site_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(SCHEDULE_NAMESPACE, str(site_id))


def floor_slot(t: datetime, slot_minutes: int) -> datetime:
    t = t.astimezone(UTC)
    minutes = (t.hour * 60 + t.minute) // slot_minutes * slot_minutes
    return t.replace(hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0)


def _tariff(row: Row, known: dict[datetime, float] | None = None) -> Tariff:
    rates = tuple(
        TouRate(
            r["start_local"] if isinstance(r["start_local"], time) else time.fromisoformat(r["start_local"]),
            r["end_local"] if isinstance(r["end_local"], time) else time.fromisoformat(r["end_local"]),
            float(r["p_per_kwh"]),
        )
        for r in row.get("rates", [])
    )
    return Tariff(
        kind=row["kind"],
        fixed_p_per_kwh=row.get("fixed_p_per_kwh"),
        rates=rates,
        known=known or {},
        standing_charge_p_per_day=row.get("standing_charge_p_per_day", 0.0),
    )


class PlanningService:
    def __init__(
        self,
        repo: Repository,
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
    ) -> None:
        self.repo = repo
        # Where each plan starts: the measured state (site.state_measured), or the reason it is not.
        self.plan_start = PlanStartSource(MeasuredStates(repo.pool), max_age_s=measured_state_max_age_s)
        self.bus = bus
        self.slot_minutes = slot_minutes
        self.validity = timedelta(hours=schedule_validity_h)
        # Re-plans go to the work queue; without one (tools, unit tests) they run here and now.
        self.queue = queue
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.drift_soc_pct = drift_soc_pct
        self.history = timedelta(days=forecast_history_days)
        # Pluggable; the defaults are the back-test's baselines.
        self.load_forecaster: Forecaster = load_forecaster or SameSlotLastWeeks()
        self.pv_forecaster: Forecaster = pv_forecaster or SameTimeLastDays()
        # A plan holds one pooled connection for its site lock and uses another: bound the plans running
        # at once in this process so they can never take every connection of the pool between them.
        max_size = int(getattr(repo.pool, "max_size", 10))
        self._running = asyncio.Semaphore(max(1, min(4, (max_size - 2) // 2)))

    async def _prices(
        self, site: Row, direction: str, start: datetime, slots: int, required: bool = True
    ) -> tuple[np.ndarray, int]:
        row = await self.repo.site_tariff(site["site_id"], direction)
        if row is None:
            if direction == "export" or not required:
                return np.zeros(slots), 0
            raise Unprocessable(f"site {site['site_id']} has no import tariff")
        known = None
        if row["kind"] == "dynamic":
            currency = row.get("currency", "GBP")
            known = await self.repo.prices(
                row["market"],
                row["region"],
                direction,
                start - timedelta(days=8),
                start + timedelta(days=3),
                currency,
            )
            if not known:
                if not required:
                    return np.zeros(slots), slots
                raise Unprocessable(
                    f"no {row['market']} {direction} prices in {currency} known for site {site['site_id']}"
                )
        prices, forecast = slot_prices(_tariff(row, known), start, self.slot_minutes, slots, site["timezone"])
        return prices, int(forecast.sum())

    async def _forecast(
        self, site: Row, start: datetime, slots: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Provided forecasts (``forecast.updated``) where they cover, the baselines on the site's
        recorded actuals beyond them, flat values only without any history (see ``forecasting.site``)."""
        end = start + timedelta(minutes=self.slot_minutes * slots)
        provided = await self.repo.forecast(site["site_id"], start, end)
        history = await self.repo.actual_history(site["site_id"], start - self.history, start)
        return site_forecast(
            provided, history, start, self.slot_minutes, slots, self.load_forecaster, self.pv_forecaster
        )

    async def build_input(
        self, site: Row, now: datetime, *, prices_required: bool = True
    ) -> tuple[PlanInput, dict[str, Any]]:
        """The optimiser's input for a site, and which forecast sources it used.

        ``prices_required=False`` (a hold) plans on zero prices when none are known."""
        strategy = await self.repo.get_strategy(site["site_id"])
        horizon_h = float(strategy["horizon_h"]) if strategy else 36.0
        slots = max(1, round(horizon_h * 60 / self.slot_minutes))
        start = floor_slot(now, self.slot_minutes)
        imp, _ = await self._prices(site, "import", start, slots, prices_required)
        exp_, _ = await self._prices(site, "export", start, slots, prices_required)
        load, pv, forecast_meta = await self._forecast(site, start, slots)
        begin = await self.plan_start.plan_start(site, now, start, self.slot_minutes, load, pv, forecast_meta)
        load, pv = begin.load_kw, begin.pv_kw
        end = start + timedelta(minutes=self.slot_minutes * slots)
        dispatches = tuple(
            Dispatch(d["start_at"], d["end_at"], d["battery_power_kw"], str(d["dispatch_id"]))
            for d in await self.repo.active_dispatches(site["site_id"], start, end)
        )
        windows: tuple[TimeWindow, ...] = ()
        dc = None
        kind: StrategyKind = "arbitrage"
        reserve = 0.0
        if strategy:
            kind = "self_consumption" if strategy["kind"] == "self_consumption" else "arbitrage"
            reserve = strategy["reserve_soc_pct"]
            windows = tuple(
                TimeWindow(
                    datetime.fromisoformat(w["start"]),
                    datetime.fromisoformat(w["end"]),
                    WindowMode(w["mode"]),
                    float(w.get("power_kw", 0.0)),
                )
                for w in strategy["windows"]
            )
            if strategy["demand_charge_p_per_kw"]:
                dc = DemandCharge(strategy["demand_charge_p_per_kw"], strategy["billed_peak_kw"])
        recent = imp[: min(len(imp), 48)]
        inp = PlanInput(
            start=start,
            slot_minutes=self.slot_minutes,
            import_price_p_per_kwh=imp,
            export_price_p_per_kwh=exp_,
            load_kw=load,
            pv_kw=pv,
            initial_soc_pct=begin.soc_pct,
            battery=Battery(
                capacity_kwh=site["capacity_kwh"],
                max_charge_kw=site["max_charge_kw"],
                max_discharge_kw=site["max_discharge_kw"],
                charge_efficiency=site["charge_efficiency"],
                discharge_efficiency=site["discharge_efficiency"],
                soc_min_pct=site["soc_min_pct"],
                soc_max_pct=site["soc_max_pct"],
                degradation_p_per_kwh=site["degradation_p_per_kwh"],
            ),
            site=Site(
                import_limit_kw=site["import_limit_kw"] if site["import_limit_kw"] is not None else math.inf,
                export_limit_kw=site["export_limit_kw"] if site["export_limit_kw"] is not None else math.inf,
            ),
            strategy=Strategy(
                kind=kind,
                reserve_soc_pct=reserve,
                demand_charge=dc,
                windows=windows,
                dispatches=dispatches,
            ),
            terminal_value_p_per_kwh=float(np.quantile(recent, 0.25)) / site["charge_efficiency"],
        )
        return inp, forecast_meta

    # --- re-plans: enqueue one job per site; a worker (any replica or fleet-worker) runs it ---------
    async def request_replan(self, site_ids: Iterable[uuid.UUID], trigger: str, input_version: str) -> int:
        """Enqueue a re-plan of each site for this input version (the job key); returns jobs enqueued.

        Without a queue (tools, unit tests) the jobs run here, one after another."""
        jobs = [PlanJob.make(s, trigger, input_version) for s in site_ids]
        if self.queue is not None:
            return await self.queue.enqueue(jobs)
        for job in jobs:
            await self.run_job(job)
        return len(jobs)

    async def run_job(self, job: PlanJob) -> None:
        """A worker's handler: plan, store and publish once per job key. A site that cannot be planned
        (unknown, no tariff or prices yet) is not a retry: the job is dropped with a warning."""
        try:
            await self.plan_site(job.site_id, job.trigger, key=job.key)
        except NatteryError as err:
            log.warning("plan job %s (%s) for %s dropped: %s", job.key, job.trigger, job.site_id, err)

    async def plan_site(
        self,
        site_id: uuid.UUID,
        trigger: str,
        now: datetime | None = None,
        *,
        key: uuid.UUID | None = None,
    ) -> dict[str, Any] | None:
        """Plan a site, store the new version and publish it; None when ``key`` was already done (a
        redelivered job: its version is re-announced if the announcement had not been confirmed) or
        when the site is stopped and already held (the job is dropped).

        Planning of one site is serialised (advisory lock) and the stop is checked under the lock, so a
        stopped site never gets a trading schedule after its hold, whichever worker runs the job."""
        key = key or uuid.uuid4()
        async with self._running, self.repo.site_lock(site_id):
            done = await self.repo.plan_job(key)
            if done is not None:
                if done["published_at"] is None:
                    await self._republish(done)
                log.info("plan job %s already done (version %s)", key, done["version"])
                return None
            site = await self.repo.get_site(site_id)
            if site is None:
                raise NotFound(f"site {site_id} has no battery configured in trading")
            now = now or datetime.now(UTC)
            stop = await self.repo.active_stop(site["org_id"], site_id)
            if stop is not None:
                latest = await self.repo.latest_schedule(site_id)
                if (
                    latest is not None
                    and latest[0]["method"] == "hold"
                    and latest[0]["valid_until"] > now + REPLAN_MARGIN
                ):
                    log.info("site %s is stopped and held: %s dropped", site_id, trigger)
                    return None
                inp, forecast = await self.build_input(site, now, prices_required=False)
                plan = _hold_plan(inp, f"holding: emergency stop by {stop['created_by']} ({stop['reason']})")
            else:
                inp, forecast = await self.build_input(site, now)
                plan = solve(inp)
            return await self._store_and_publish(site, inp, plan, trigger, now, forecast, key)

    async def _store_and_publish(
        self,
        site: Row,
        inp: PlanInput,
        plan: Plan,
        trigger: str,
        now: datetime,
        forecast: dict[str, Any],
        key: uuid.UUID,
    ) -> dict[str, Any] | None:
        step = timedelta(minutes=inp.slot_minutes)
        valid_until = min(now + self.validity, inp.start + step * inp.slots)
        slots: list[dict[str, Any]] = [
            {
                "start_at": inp.start + step * i,
                "end_at": inp.start + step * (i + 1),
                # the one slot -> edge instruction mapping, shared with the back-test
                "mode": slot_instruction(plan, i).mode.value,
                "battery_power_kw": round(float(plan.battery_power_kw[i]), 4),
                "soc_pct": round(float(plan.soc_pct[i]), 3),
                "grid_kw": round(float(plan.grid_kw[i]), 4),
                "import_p_per_kwh": float(inp.import_price_p_per_kwh[i]),
                "export_p_per_kwh": float(inp.export_price_p_per_kwh[i]),
                "reason": plan.reasons[i] if i < len(plan.reasons) else "",
            }
            for i in range(inp.slots)
        ]
        head = {
            "schedule_id": schedule_id_for(site["site_id"]),
            "org_id": site["org_id"],
            "site_id": site["site_id"],
            "valid_until": valid_until,
            "trigger": trigger,
            "status": plan.status,
            "method": plan.method,
            "objective_p": None if math.isnan(plan.objective_p) else plan.objective_p,
            "relaxations": [
                {"slot": r.slot, "kind": r.kind.value, "amount": r.amount, "reason": r.reason}
                for r in plan.relaxations
            ],
            "forecast": forecast,
        }
        version = await self.repo.insert_schedule(
            head, slots, {"job_key": key, "trigger": trigger, "worker": self.worker_name}
        )
        if version is None:  # the same job ran concurrently elsewhere and stored first
            return None
        await self._publish(head, version, slots, key)
        return {**head, "version": version, "slots": slots}

    async def _publish(self, head: Row, version: int, slots: list[Row], key: uuid.UUID) -> None:
        """Announce a stored version; the event id follows from the job key, so a re-announcement after
        a crash carries the same id (consumers are idempotent by event id)."""
        if self.bus is not None:
            valid_until = head["valid_until"]
            published = [
                ScheduleSlot(
                    start=s["start_at"],
                    end=s["end_at"],
                    mode=BatteryMode(s["mode"]),
                    battery_power_w=s["battery_power_kw"] * 1000.0,
                    target_soc_pct=max(0.0, min(100.0, s["soc_pct"])),
                )
                for s in slots
                if s["start_at"] < valid_until
            ]
            data = SchedulePublished(
                schedule_id=head["schedule_id"],
                version=version,
                org_id=head["org_id"],
                site_id=head["site_id"],
                slots=published,
                valid_until=valid_until,
            )
            event = make_event(
                EventType.SCHEDULE_PUBLISHED, data, source=SOURCE, subject=str(head["site_id"])
            ).model_copy(update={"id": uuid.uuid5(EVENT_NAMESPACE, str(key))})
            await self.bus.publish(event)
        await self.repo.mark_published(key)

    async def _republish(self, job: Row) -> None:
        got = await self.repo.schedule_version(job["schedule_id"], job["version"])
        if got is not None:
            head, slots = got
            await self._publish(head, int(head["version"]), slots, job["job_key"])

    # --- drift from plan ---------------------------------------------------------------------------
    async def check_drift(self, site_id: uuid.UUID, start_at: datetime, soc_pct: float) -> bool:
        """Re-plan when the measured SOC of a slot differs from the plan's by more than the threshold
        (percentage points). One job per slot and schedule version, however often it is reported."""
        start = floor_slot(start_at, self.slot_minutes)
        rows = await self.repo.planned_vs_actual(site_id, start, start + timedelta(minutes=self.slot_minutes))
        if not rows:
            return False
        planned = float(rows[0]["planned_soc_pct"])
        if abs(soc_pct - planned) <= self.drift_soc_pct:
            return False
        await self.request_replan(
            [site_id],
            f"drift: SOC {soc_pct:.1f}% vs planned {planned:.1f}% at {start:%Y-%m-%d %H:%M}Z",
            f"drift:{start.isoformat()}:v{rows[0]['version']}",
        )
        return True

    # --- dispatches ------------------------------------------------------------------------------
    async def receive_dispatch(self, d: DispatchReceived) -> DispatchStatus | None:
        site = await self.repo.get_site(d.site_id)
        power_kw = d.battery_power_w / 1000.0
        reason = None
        status = DispatchStatus.ACCEPTED
        if site is None or site["org_id"] != d.org_id:
            status, reason = DispatchStatus.REJECTED, "site unknown to trading"
        elif power_kw > site["max_discharge_kw"] + 1e-9 or -power_kw > site["max_charge_kw"] + 1e-9:
            status, reason = (
                DispatchStatus.REJECTED,
                (
                    f"{power_kw:+.2f} kW is beyond the battery's limits "
                    f"(-{site['max_charge_kw']:.2f}..+{site['max_discharge_kw']:.2f} kW)"
                ),
            )
        elif await self.repo.active_stop(d.org_id, d.site_id) is not None:
            status, reason = DispatchStatus.REJECTED, "emergency stop active"
        new = await self.repo.insert_dispatch(
            {
                "dispatch_id": d.dispatch_id,
                "org_id": d.org_id,
                "site_id": d.site_id,
                "provider": d.provider,
                "battery_power_kw": power_kw,
                "start_at": d.start,
                "end_at": d.end,
                "status": status.value,
                "reason": reason,
            }
        )
        if not new:
            return None  # redelivery: already decided and announced
        if self.bus is not None:
            ev = DispatchStatusChanged(
                dispatch_id=d.dispatch_id,
                org_id=d.org_id,
                site_id=d.site_id,
                status=status,
                reason=reason,
                at=datetime.now(UTC),
            )
            await self.bus.publish(
                make_event(EventType.DISPATCH_STATUS_CHANGED, ev, source=SOURCE, subject=str(d.site_id))
            )
        if status == DispatchStatus.ACCEPTED:
            await self.request_replan([d.site_id], f"dispatch {d.dispatch_id}", f"dispatch:{d.dispatch_id}")
        return status

    # --- emergency stop --------------------------------------------------------------------------
    async def emergency_stop(self, org_id: uuid.UUID, site_id: uuid.UUID | None, reason: str, by: str) -> Row:
        """Stop now: the hold schedules are stored and published before this returns (not queued behind
        other jobs); queued jobs for the site then find it stopped and held and are dropped."""
        if site_id is not None:
            site = await self.repo.get_site(site_id)
            if site is None or site["org_id"] != org_id:
                raise NotFound(f"site {site_id} not found")
        stop = await self.repo.create_stop(org_id, site_id, reason, by)
        sites = [site_id] if site_id is not None else await self.repo.sites_of_org(org_id)
        for s in sites:
            try:
                await self.plan_site(s, "emergency stop", key=job_key(s, f"stop:{stop['stop_id']}"))
            except NatteryError as err:
                log.error("hold of %s after emergency stop %s failed: %s", s, stop["stop_id"], err)
        return stop

    async def release_stop(self, org_id: uuid.UUID, stop_id: uuid.UUID, by: str) -> Row:
        stop = await self.repo.release_stop(org_id, stop_id, by)
        if stop is None:
            raise NotFound(f"no active emergency stop {stop_id}")
        await self.replan_sites(org_id, stop["site_id"], "emergency stop released", f"release:{stop_id}")
        return stop

    async def replan_sites(
        self, org_id: uuid.UUID, site_id: uuid.UUID | None, trigger: str, input_version: str
    ) -> int:
        sites = [site_id] if site_id is not None else await self.repo.sites_of_org(org_id)
        return await self.request_replan(sites, trigger, input_version)

    async def replan_due(self, now: datetime | None = None, margin: timedelta = REPLAN_MARGIN) -> int:
        """Enqueue a re-plan of every site whose schedule expires within ``margin`` (or has none).

        Run on a timer by every replica; a transaction-level advisory lock lets one replica do a tick
        while the others skip it (nothing assumes a single replica). The job key is the version being
        refreshed, so a site still waiting in the queue at the next tick is not planned twice."""
        now = now or datetime.now(UTC)
        async with self.repo.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext('trading.replan_due')) AS locked"
            )
            row: Any = await cur.fetchone()
            locked = row["locked"] if isinstance(row, dict) else (row[0] if row else False)
            if not locked:
                return 0
            await self._announce_executed(now)
            jobs = [
                PlanJob.make(site_id, "periodic re-plan", f"periodic:v{version}")
                for site_id, version in await self.repo.sites_due(now + margin)
            ]
            if self.queue is not None:
                return await self.queue.enqueue(jobs)
            for job in jobs:  # no queue: plan here (with the caller's clock)
                try:
                    await self.plan_site(job.site_id, job.trigger, now, key=job.key)
                except NatteryError as err:
                    log.warning("periodic re-plan of %s skipped: %s", job.site_id, err)
            return len(jobs)

    async def _announce_executed(self, now: datetime) -> None:
        for d in await self.repo.finish_dispatches(now):
            if self.bus is None:
                continue
            ev = DispatchStatusChanged(
                dispatch_id=d["dispatch_id"],
                org_id=d["org_id"],
                site_id=d["site_id"],
                status=DispatchStatus.EXECUTED,
                reason="window ended",
                at=now,
            )
            await self.bus.publish(
                make_event(EventType.DISPATCH_STATUS_CHANGED, ev, source=SOURCE, subject=str(d["site_id"]))
            )

    async def run_periodic(self, interval_s: float) -> None:
        """Re-plan due sites every ``interval_s`` until cancelled; errors are logged, never fatal."""
        while True:
            try:
                n = await self.replan_due()
                if n:
                    log.info("periodic re-plan: %d sites", n)
            except Exception:
                log.exception("periodic re-plan failed")
            await asyncio.sleep(interval_s)


def _hold_plan(inp: PlanInput, reason: str) -> Plan:
    t = inp.slots
    zero = np.zeros(t)
    net = np.asarray(inp.load_kw) - np.asarray(inp.pv_kw)
    return Plan(
        start=inp.start,
        slot_minutes=inp.slot_minutes,
        battery_power_kw=zero.copy(),
        charge_kw=zero.copy(),
        discharge_kw=zero.copy(),
        grid_kw=net,
        import_kw=np.maximum(net, 0),
        export_kw=np.maximum(-net, 0),
        curtailed_pv_kw=zero.copy(),
        soc_pct=np.full(t, inp.initial_soc_pct),
        objective_p=math.nan,
        status="emergency_stop",
        solve_ms=0.0,
        used_mip=False,
        method="hold",
        reasons=[reason] * t,
    )
