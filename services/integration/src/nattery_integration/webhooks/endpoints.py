"""``POST /webhooks/{provider}``: no bearer token (the signature is the authentication); the gateway
routes ``/webhooks/`` here. Size, signature and timestamp are checked on the raw body before anything
is parsed; the delivery is stored before the 200.

The route is served by a raw ASGI app (:class:`WebhookEndpoint`), registered in the router before the
FastAPI route of the same path and method, which is there for the OpenAPI document only (so the docs
and the schema fuzzer in tests/security see it): at 500 deliveries/s FastAPI's request handling
(dependencies, response model) was a fifth of the event loop. Errors are still raised as the
project's exceptions, which the app's exception middleware turns into the usual JSON error bodies.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from nattery_integration.webhooks.service import WebhookService

PROVIDER_PATTERN = r"^[a-z][a-z0-9_]{1,31}$"
_PROVIDER = re.compile(PROVIDER_PATTERN[1:-1])  # fullmatch: "$" would let a trailing newline by
_HEADERS = (b"content-length", b"webhook-id", b"webhook-timestamp", b"webhook-signature")
_JSON_HEADERS = [(b"content-type", b"application/json")]

router = APIRouter(tags=["webhooks"])


class WebhookAck(BaseModel):
    status: str  # accepted | duplicate (a replay: acknowledged, ignored)
    delivery_id: str


class WebhookEndpoint:
    """The ASGI app of ``POST /webhooks/{provider}``; the service comes from the lifespan state."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider: str = scope["path_params"]["provider"]
        if not _PROVIDER.fullmatch(provider):  # the same 422 FastAPI gave for the path parameter
            raise RequestValidationError(
                [
                    {
                        "loc": ("path", "provider"),
                        "msg": f"String should match pattern '{PROVIDER_PATTERN}'",
                        "type": "string_pattern_mismatch",
                    }
                ]
            )
        webhooks: WebhookService = scope["state"]["webhooks"]
        webhooks.key_for(provider)  # 404 before reading a byte for a provider we take no webhooks from
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _HEADERS and name not in headers:  # the first of a repeated header, as Starlette
                headers[name] = value.decode("latin-1")
        limit = webhooks.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise webhooks.too_large(provider)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nothing stored, no one to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise webhooks.too_large(provider)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivery_id = headers.get(b"webhook-id")
        signed_at = webhooks.verify(
            provider,
            delivery_id=delivery_id,
            timestamp=headers.get(b"webhook-timestamp"),
            sig=headers.get(b"webhook-signature"),
            body=body,
        )
        assert delivery_id is not None  # verify refuses a delivery without one
        accepted = await webhooks.store(provider, delivery_id, signed_at, body)
        answer = json.dumps(
            {"status": "duplicate" if accepted.duplicate else "accepted", "delivery_id": delivery_id}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


# First in the router: Starlette serves a request with the first route that matches it fully.
router.routes.append(
    Route("/webhooks/{provider}", WebhookEndpoint(), methods=["POST"], include_in_schema=False)
)


@router.post(
    "/webhooks/{provider}",
    summary="Inbound signed webhook (Standard Webhooks headers)",
    responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}},
    name="receive_webhook",  # the operation id it always had
    description="Standard Webhooks headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` "
    "(HMAC-SHA256 over the raw body); any body up to ``integration.webhooks.max_body_bytes``. The "
    "delivery is stored before the 200; a replay (same ``webhook-id``) is answered ``duplicate``.",
)
async def receive_webhook_documented(
    provider: Annotated[str, Path(pattern=PROVIDER_PATTERN)],
) -> WebhookAck:
    # The OpenAPI entry only: never called, WebhookEndpoint (registered first) serves the route.
    raise AssertionError("POST /webhooks/{provider} is served by WebhookEndpoint, registered first")
