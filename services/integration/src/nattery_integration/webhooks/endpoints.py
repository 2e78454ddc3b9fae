"""``POST /webhooks/{provider}``: no bearer token (the signature is the authentication); the gateway
routes ``/webhooks/`` here. Size, signature and timestamp are checked on the raw body before anything
is parsed; the delivery is stored before the 200."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from nattery_integration.deps import WebhooksDep

router = APIRouter(tags=["webhooks"])


class WebhookAck(BaseModel):
    status: str  # accepted | duplicate (a replay: acknowledged, ignored)
    delivery_id: str


@router.post(
    "/webhooks/{provider}",
    summary="Inbound signed webhook (Standard Webhooks headers)",
    responses={400: {}, 401: {}, 404: {}, 413: {}},
)
async def receive_webhook(
    provider: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{1,31}$")],
    request: Request,
    webhooks: WebhooksDep,
) -> WebhookAck:
    webhooks.key_for(provider)  # 404 before reading a byte for a provider we take no webhooks from
    limit = webhooks.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise webhooks.too_large(provider)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise webhooks.too_large(provider)
        chunks.append(chunk)
    body = b"".join(chunks)
    signed_at = webhooks.verify(
        provider,
        delivery_id=request.headers.get("webhook-id"),
        timestamp=request.headers.get("webhook-timestamp"),
        sig=request.headers.get("webhook-signature"),
        body=body,
    )
    delivery_id = request.headers["webhook-id"]
    accepted = await webhooks.store(provider, delivery_id, signed_at, body)
    return WebhookAck(status="duplicate" if accepted.duplicate else "accepted", delivery_id=delivery_id)
