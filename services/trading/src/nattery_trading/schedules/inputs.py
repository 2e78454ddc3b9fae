"""Building the optimiser's input for a batch of sites: everything a plan reads, one query per kind of
row for all the batch's sites (on the connection holding their locks), then one ``PlanInput`` per site.

- prices: each tariff's slot prices (a dynamic tariff's known market prices, forecast beyond them;
  ``tariffs/pricing.py``), computed once per tariff for the batch (an org's sites share tariffs);
- load and PV: provided forecasts (``forecast.updated``) where they cover, the baselines on the site's
  recorded actuals beyond them (``forecasting/site.py``);
- the start: the measured state when fresh, else named on the schedule (``start.py``);
- strategy, manual windows and accepted dispatches.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from nattery_shared.errors import Unprocessable
from nattery_trading.dispatches.repository import DispatchRepository, DispatchRow
from nattery_trading.forecasting import Forecaster, SameSlotLastWeeks, SameTimeLastDays
from nattery_trading.forecasting.site import Actuals, site_forecast
from nattery_trading.measured.repository import MeasuredStates, SiteStateRow
from nattery_trading.optimiser import (
    Battery,
    DemandCharge,
    Dispatch,
    PlanInput,
    Site,
    Strategy,
    TimeWindow,
    WindowMode,
)
from nattery_trading.optimiser.model import FloatArray, StrategyKind
from nattery_trading.schedules.repository import ForecastRow, ScheduleRepository
from nattery_trading.schedules.start import plan_start
from nattery_trading.sites.repository import SiteConfig
from nattery_trading.strategies.repository import StrategyRepository, StrategyRow
from nattery_trading.tariffs.pricing import Tariff, TouRate, slot_prices
from nattery_trading.tariffs.repository import SiteTariff, TariffRepository

_EMPTY_HISTORY = Actuals(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
DEFAULT_HORIZON_H = 36.0


def floor_slot(t: datetime, slot_minutes: int) -> datetime:
    t = t.astimezone(UTC)
    minutes = (t.hour * 60 + t.minute) // slot_minutes * slot_minutes
    return t.replace(hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0)


def _tariff(row: SiteTariff, known: dict[datetime, float] | None = None) -> Tariff:
    return Tariff(
        kind=row.kind,
        fixed_p_per_kwh=row.fixed_p_per_kwh,
        rates=tuple(TouRate(r.start_local, r.end_local, float(r.p_per_kwh)) for r in row.rates),
        known=known or {},
        standing_charge_p_per_day=row.standing_charge_p_per_day,
    )


def _price_key(row: SiteTariff, slots: int, timezone: str) -> tuple[object, ...]:
    """What a tariff's slot prices follow from. A dynamic tariff's are its market's feed, whichever site
    or org holds it: every site of a fleet on one market shares them (each org has its own tariff rows,
    and sorting the feed's ~400 prices per site cost ~1 ms of a fleet re-plan's CPU per site)."""
    if row.kind == "dynamic":
        return ("dynamic", row.market or "", row.region, row.direction, row.currency, slots)
    if row.kind == "fixed":
        return ("fixed", row.fixed_p_per_kwh, slots)
    return ("tariff", row.tariff_id, slots, timezone)


@dataclass
class BatchInputs:
    """Everything a batch of plans reads."""

    now: datetime
    start: datetime
    strategies: dict[uuid.UUID, StrategyRow]
    tariffs: dict[tuple[uuid.UUID, str], SiteTariff]
    known_prices: dict[tuple[str, str, str, str], dict[datetime, float]]
    forecasts: dict[uuid.UUID, list[ForecastRow]]
    histories: dict[uuid.UUID, Actuals]
    states: dict[uuid.UUID, SiteStateRow]
    dispatches: dict[uuid.UUID, list[DispatchRow]]
    # slot prices by what they follow from (``_price_key``): computed once a batch for the sites sharing it
    slot_prices: dict[tuple[object, ...], FloatArray] = field(default_factory=dict)
    # the first day's lower quartile of an import price array (the end-of-horizon value), by the array's
    # id: the sites sharing a tariff's slot prices share it (the array is kept to keep its id its own)
    recent_q25: dict[int, tuple[FloatArray, float]] = field(default_factory=dict)

    def recent_quartile(self, prices: FloatArray, slots_per_day: int) -> float:
        """The lower quartile of the first day's slots of ``prices``, never below zero: a kWh left in the
        battery can always be kept, so it is worth at least nothing (a negative value made plans empty the
        battery into negative prices when a quarter of the day's prices were negative)."""
        got = self.recent_q25.get(id(prices))
        if got is None or got[0] is not prices:
            got = self.recent_q25[id(prices)] = (
                prices,
                max(0.0, float(np.quantile(prices[: min(len(prices), slots_per_day)], 0.25))),
            )
        return got[1]


class PlanInputs:
    def __init__(
        self,
        *,
        slot_minutes: int = 30,
        forecast_history_days: float = 28.0,
        measured_state_max_age_s: float = 300.0,
        load_forecaster: Forecaster | None = None,
        pv_forecaster: Forecaster | None = None,
    ) -> None:
        self.slot_minutes = slot_minutes
        self.history = timedelta(days=forecast_history_days)
        # a plan starts from the measured state (site.state_measured) when at most this old
        self.measured_state_max_age_s = measured_state_max_age_s
        # pluggable; the defaults are the back-test's baselines
        self.load_forecaster: Forecaster = load_forecaster or SameSlotLastWeeks()
        self.pv_forecaster: Forecaster = pv_forecaster or SameTimeLastDays()

    def horizon_slots(self, strategy: StrategyRow | None) -> int:
        horizon_h = float(strategy.horizon_h) if strategy else DEFAULT_HORIZON_H
        return max(1, round(horizon_h * 60 / self.slot_minutes))

    async def read(self, conn: AsyncConnection[Any], sites: list[SiteConfig], now: datetime) -> BatchInputs:
        """What the plans of ``sites`` read, on ``conn`` (the batch's lock transaction)."""
        ids = [s.site_id for s in sites]
        start = floor_slot(now, self.slot_minutes)
        strategies = await StrategyRepository.of_sites(conn, ids)
        horizon = max((self.horizon_slots(strategies.get(s)) for s in ids), default=1)
        end = start + timedelta(minutes=self.slot_minutes * horizon)
        tariffs = await TariffRepository.of_sites(conn, ids)
        known: dict[tuple[str, str, str, str], dict[datetime, float]] = {}
        for t in tariffs.values():
            k = (t.market or "", t.region, t.direction, t.currency)
            if t.kind == "dynamic" and k not in known:
                known[k] = await TariffRepository.known_prices(
                    conn, k[0], k[1], k[2], start - timedelta(days=8), start + timedelta(days=3), k[3]
                )
        return BatchInputs(
            now=now,
            start=start,
            strategies=strategies,
            tariffs=tariffs,
            known_prices=known,
            forecasts=await ScheduleRepository.forecasts_of(conn, ids, start, end),
            histories=await MeasuredStates.histories(conn, ids, start - self.history, start),
            states=await MeasuredStates.latest_of(conn, ids),
            dispatches=await DispatchRepository.active_of_sites(conn, ids, start, end),
        )

    def _prices(
        self, got: BatchInputs, site: SiteConfig, direction: str, slots: int, required: bool
    ) -> FloatArray:
        row = got.tariffs.get((site.site_id, direction))
        if row is None:
            if direction == "export" or not required:
                return np.zeros(slots)
            raise Unprocessable(f"site {site.site_id} has no import tariff")
        price_key = _price_key(row, slots, site.timezone)
        cached = got.slot_prices.get(price_key)
        if cached is not None:
            return cached
        known = None
        if row.kind == "dynamic":
            known = got.known_prices[(row.market or "", row.region, row.direction, row.currency)]
            if not known:
                if not required:
                    return np.zeros(slots)
                raise Unprocessable(
                    f"no {row.market} {direction} prices in {row.currency} known for site {site.site_id}"
                )
        prices, _ = slot_prices(_tariff(row, known), got.start, self.slot_minutes, slots, site.timezone)
        prices.setflags(write=False)  # shared by the batch's sites on this tariff
        got.slot_prices[price_key] = prices
        return prices

    def build(
        self, got: BatchInputs, site: SiteConfig, *, prices_required: bool = True
    ) -> tuple[PlanInput, dict[str, Any]]:
        """The optimiser's input for a site, and which forecast sources it used.

        ``prices_required=False`` (a hold) plans on zero prices when none are known."""
        strategy = got.strategies.get(site.site_id)
        slots = self.horizon_slots(strategy)
        start = got.start
        end = start + timedelta(minutes=self.slot_minutes * slots)
        imp = self._prices(got, site, "import", slots, prices_required)
        exp_ = self._prices(got, site, "export", slots, prices_required)
        provided = [f for f in got.forecasts.get(site.site_id, ()) if f.start_at < end]
        load, pv, forecast_meta = site_forecast(
            provided,
            got.histories.get(site.site_id, _EMPTY_HISTORY),
            start,
            self.slot_minutes,
            slots,
            self.load_forecaster,
            self.pv_forecaster,
        )
        begin = plan_start(
            site,
            got.states.get(site.site_id),
            got.now,
            start,
            self.slot_minutes,
            load,
            pv,
            self.measured_state_max_age_s,
        )
        forecast_meta["initial_state"] = begin.info
        summary = forecast_meta.get("summary")
        forecast_meta["summary"] = (
            f"{summary}; start: {begin.info['reason']}" if summary else begin.info["reason"]
        )
        load, pv = begin.load_kw, begin.pv_kw
        dispatches = tuple(
            Dispatch(d.start_at, d.end_at, d.battery_power_kw, str(d.dispatch_id))
            for d in got.dispatches.get(site.site_id, ())
            if d.start_at < end
        )
        windows: tuple[TimeWindow, ...] = ()
        dc = None
        kind: StrategyKind = "arbitrage"
        reserve = 0.0
        if strategy:
            kind = "self_consumption" if strategy.kind == "self_consumption" else "arbitrage"
            reserve = strategy.reserve_soc_pct
            windows = tuple(
                TimeWindow(
                    datetime.fromisoformat(w["start"]),
                    datetime.fromisoformat(w["end"]),
                    WindowMode(w["mode"]),
                    float(w.get("power_kw", 0.0)),
                )
                for w in strategy.windows
            )
            if strategy.demand_charge_p_per_kw:
                dc = DemandCharge(strategy.demand_charge_p_per_kw, strategy.billed_peak_kw)
        inp = PlanInput(
            start=start,
            slot_minutes=self.slot_minutes,
            import_price_p_per_kwh=imp,
            export_price_p_per_kwh=exp_,
            load_kw=load,
            pv_kw=pv,
            initial_soc_pct=begin.soc_pct,
            battery=Battery(
                capacity_kwh=site.capacity_kwh,
                max_charge_kw=site.max_charge_kw,
                max_discharge_kw=site.max_discharge_kw,
                charge_efficiency=site.charge_efficiency,
                discharge_efficiency=site.discharge_efficiency,
                soc_min_pct=site.soc_min_pct,
                soc_max_pct=site.soc_max_pct,
                degradation_p_per_kwh=site.degradation_p_per_kwh,
            ),
            site=Site(
                import_limit_kw=site.import_limit_kw if site.import_limit_kw is not None else math.inf,
                export_limit_kw=site.export_limit_kw if site.export_limit_kw is not None else math.inf,
            ),
            strategy=Strategy(
                kind=kind, reserve_soc_pct=reserve, demand_charge=dc, windows=windows, dispatches=dispatches
            ),
            terminal_value_p_per_kwh=got.recent_quartile(imp, 24 * 60 // self.slot_minutes)
            / site.charge_efficiency,
        )
        return inp, forecast_meta
