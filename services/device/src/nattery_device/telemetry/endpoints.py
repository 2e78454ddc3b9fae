"""Telemetry queries (viewer): latest per device / site / fleet, history, statistics, CSV export."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import AwareDatetime

from nattery_device.telemetry import service
from nattery_device.telemetry.schemas import Aggregate, History, Latest, Stats, parse_fields
from nattery_shared.auth import Viewer
from nattery_shared.deps import InfluxDep, PoolDep, RedisDep
from nattery_shared.errors import BadRequest

router = APIRouter(tags=["telemetry"])


def _fields(raw: str | None) -> list[str] | None:
    try:
        return parse_fields(raw)
    except ValueError as err:
        raise BadRequest(str(err)) from err


@router.get("/devices/{device_id}/latest")
async def device_latest(device_id: uuid.UUID, principal: Viewer, pool: PoolDep, redis: RedisDep) -> Latest:
    return await service.latest_for_device(pool, redis, principal.org_id, device_id)


@router.get("/sites/{site_id}/latest")
async def site_latest(site_id: uuid.UUID, principal: Viewer, pool: PoolDep, redis: RedisDep) -> list[Latest]:
    return await service.latest_for_many(pool, redis, principal.org_id, site_id=site_id, limit=1000)


@router.get("/latest", summary="Latest values of every device of the org (fleet)")
async def fleet_latest(
    principal: Viewer, pool: PoolDep, redis: RedisDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> list[Latest]:
    return await service.latest_for_many(pool, redis, principal.org_id, site_id=None, limit=limit)


@router.get(
    "/devices/{device_id}/history",
    summary="History over [start, end); with interval, downsampled by mean|min|max|last; format=csv exports",
    response_model=History,
)
async def device_history(
    device_id: uuid.UUID,
    principal: Viewer,
    pool: PoolDep,
    influx: InfluxDep,
    start: AwareDatetime,
    end: AwareDatetime,
    fields: Annotated[
        str | None, Query(description="comma-separated, e.g. battery_power_w,battery_soc_pct")
    ] = None,
    interval: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{0,5}(s|m|h|d)$")] = None,
    aggregate: Aggregate = Aggregate.MEAN,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Any:
    result = await service.history(
        pool,
        influx,
        principal.org_id,
        device_id,
        start=start,
        end=end,
        fields=_fields(fields),
        interval=interval,
        aggregate=aggregate,
        limit=limit,
    )
    if format == "csv":
        return PlainTextResponse(
            service.history_csv(result),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{device_id}.csv"'},
        )
    # Serialized once by pydantic-core: skips FastAPI re-validating ~1,500 points against response_model.
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("/devices/{device_id}/stats", summary="mean, min, max, count; energy (kWh) for power fields")
async def device_stats(
    device_id: uuid.UUID,
    principal: Viewer,
    pool: PoolDep,
    influx: InfluxDep,
    start: AwareDatetime,
    end: AwareDatetime,
    fields: Annotated[str, Query(min_length=1)],
) -> Stats:
    names = _fields(fields) or []
    return await service.stats(pool, influx, principal.org_id, device_id, start=start, end=end, fields=names)
