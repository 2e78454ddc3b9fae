"""Typed dependencies for the services the trading app builds in its lifespan (``request.state``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from nattery_trading.dispatches.service import DispatchService
    from nattery_trading.schedules.service import PlanningService
    from nattery_trading.sites.service import SiteService
    from nattery_trading.strategies.service import StrategyService
    from nattery_trading.tariffs.service import TariffService


def get_sites(request: Request) -> SiteService:
    sites: SiteService = request.state.sites
    return sites


def get_tariffs(request: Request) -> TariffService:
    tariffs: TariffService = request.state.tariffs
    return tariffs


def get_strategies(request: Request) -> StrategyService:
    strategies: StrategyService = request.state.strategies
    return strategies


def get_dispatches(request: Request) -> DispatchService:
    dispatches: DispatchService = request.state.dispatches
    return dispatches


def get_planning(request: Request) -> PlanningService:
    planning: PlanningService = request.state.planning
    return planning


SitesDep = Annotated["SiteService", Depends(get_sites)]
TariffsDep = Annotated["TariffService", Depends(get_tariffs)]
StrategiesDep = Annotated["StrategyService", Depends(get_strategies)]
DispatchesDep = Annotated["DispatchService", Depends(get_dispatches)]
PlanningDep = Annotated["PlanningService", Depends(get_planning)]
