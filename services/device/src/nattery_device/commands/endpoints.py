"""Commands: operators send them to a device; anyone in the org can follow them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from nattery_device.commands.schemas import CommandCreate, CommandOut
from nattery_device.deps import CommandsDep
from nattery_shared.auth import Operator, Viewer

router = APIRouter(tags=["commands"])


@router.post(
    "/devices/{device_id}/commands",
    status_code=status.HTTP_201_CREATED,
    summary="Send a command (201 created, 200 when the Idempotency-Key replays an earlier one)",
    responses={409: {"description": "Idempotency-Key reused with a different body"}},
)
async def send_command(
    device_id: uuid.UUID,
    body: CommandCreate,
    principal: Operator,
    commands: CommandsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> CommandOut:
    command, created = await commands.create_from_api(
        principal.org_id, device_id, body, idempotency_key=idempotency_key, actor=principal.subject
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return command


@router.get("/commands/{command_id}", summary="A command's state and its transitions")
async def get_command(command_id: uuid.UUID, principal: Viewer, commands: CommandsDep) -> CommandOut:
    return await commands.get(principal.org_id, command_id)
