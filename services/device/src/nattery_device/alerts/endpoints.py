"""Alerts and alert rules: viewers read; operators acknowledge, resolve and edit rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from nattery_contracts.events import AlertSeverity
from nattery_device.alerts import service
from nattery_device.alerts.evaluator import AlertEvaluator
from nattery_device.alerts.schemas import AlertAction, AlertDetail, AlertPage, Rule, RuleIn, StateFilter
from nattery_device.deps import RelayDep
from nattery_shared.auth import Operator, Viewer
from nattery_shared.deps import PoolDep
from nattery_shared.validation import Offset

router = APIRouter(tags=["alerts"])


def get_evaluator(request: Request) -> AlertEvaluator:
    evaluator: AlertEvaluator = request.state.alerts
    return evaluator


EvaluatorDep = Annotated[AlertEvaluator, Depends(get_evaluator)]


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/alerts", summary="Alerts of the caller's org, newest first")
async def list_alerts(
    principal: Viewer,
    pool: PoolDep,
    site_id: uuid.UUID | None = None,
    device_id: uuid.UUID | None = None,
    rule_id: uuid.UUID | None = None,
    severity: AlertSeverity | None = None,
    state: StateFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> AlertPage:
    return await service.list_alerts(
        pool,
        principal.org_id,
        site_id=site_id,
        device_id=device_id,
        rule_id=rule_id,
        severity=severity,
        state=state,
        limit=limit,
        offset=offset,
    )


@router.get("/alerts/{alert_id}", summary="An alert with its history")
async def get_alert(alert_id: uuid.UUID, principal: Viewer, pool: PoolDep) -> AlertDetail:
    return await service.get_alert(pool, principal.org_id, alert_id)


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge a firing alert")
async def acknowledge(
    alert_id: uuid.UUID, body: AlertAction, principal: Operator, pool: PoolDep
) -> AlertDetail:
    return await service.acknowledge(pool, principal, alert_id, body.comment)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an open alert by hand")
async def resolve(
    alert_id: uuid.UUID, body: AlertAction, principal: Operator, pool: PoolDep, relay: RelayDep
) -> AlertDetail:
    detail = await service.resolve(pool, principal, alert_id, body.comment)
    relay.poke()
    return detail


@router.get("/alert-rules", summary="Alert rules of the caller's org (defaults included)")
async def list_rules(principal: Viewer, pool: PoolDep, evaluator: EvaluatorDep) -> list[Rule]:
    rules, seeded = await service.list_rules(pool, principal.org_id)
    if seeded:
        evaluator.invalidate()
    return rules


@router.post("/alert-rules", status_code=status.HTTP_201_CREATED, summary="Create an alert rule")
async def create_rule(body: RuleIn, principal: Operator, pool: PoolDep, evaluator: EvaluatorDep) -> Rule:
    rule = await service.create_rule(pool, principal.org_id, body)
    evaluator.invalidate()
    return rule


@router.get("/alert-rules/{rule_id}", summary="An alert rule")
async def get_rule(rule_id: uuid.UUID, principal: Viewer, pool: PoolDep) -> Rule:
    return await service.get_rule(pool, principal.org_id, rule_id)


@router.put("/alert-rules/{rule_id}", summary="Replace an alert rule (its open alerts are resolved)")
async def replace_rule(
    rule_id: uuid.UUID,
    body: RuleIn,
    principal: Operator,
    pool: PoolDep,
    evaluator: EvaluatorDep,
    relay: RelayDep,
) -> Rule:
    rule = await service.replace_rule(pool, principal.org_id, rule_id, body, now=_now)
    evaluator.invalidate()
    relay.poke()
    return rule


@router.delete(
    "/alert-rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an alert rule (its open alerts are resolved)",
)
async def delete_rule(
    rule_id: uuid.UUID, principal: Operator, pool: PoolDep, evaluator: EvaluatorDep, relay: RelayDep
) -> Response:
    await service.delete_rule(pool, principal.org_id, rule_id, now=_now)
    evaluator.invalidate()
    relay.poke()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
