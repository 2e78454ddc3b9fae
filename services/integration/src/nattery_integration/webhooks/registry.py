"""What a webhook handler is, for the areas that register them (``Area.webhook_handlers``).

A handler gets a delivery whose signature, timestamp and uniqueness were already checked and which is
stored; it runs in the worker after the 200, at least once (a crash mid-handler runs it again), so it
must be idempotent (``delivery.delivery_id`` is the provider's stable id). Raise to have it retried
(up to ``webhooks.max_attempts``); return normally when done.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class WebhookDelivery:
    id: int
    provider: str
    delivery_id: str
    signed_at: datetime
    received_at: datetime
    body: bytes
    attempts: int

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.body)


WebhookHandler = Callable[[WebhookDelivery], Awaitable[None]]
