"""Strategies: operators set a site's strategy (re-plans it), viewers read it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from nattery_shared.auth import Operator, Viewer
from nattery_trading.deps import StrategiesDep
from nattery_trading.strategies.schemas import StrategyIn

router = APIRouter(tags=["trading"])


@router.put("/sites/{site_id}/strategy", summary="Set a site's strategy; re-plans when it can")
async def put_strategy(
    site_id: uuid.UUID, body: StrategyIn, principal: Operator, strategies: StrategiesDep
) -> StrategyIn:
    return await strategies.set(principal.org_id, site_id, body, principal.subject)


@router.get("/sites/{site_id}/strategy")
async def get_strategy(site_id: uuid.UUID, principal: Viewer, strategies: StrategiesDep) -> StrategyIn:
    return await strategies.get(principal.org_id, site_id)
