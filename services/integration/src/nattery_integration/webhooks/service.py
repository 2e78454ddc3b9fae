"""Inbound webhooks: verify (before anything is parsed), store, answer; a worker processes afterwards.

``accept`` checks, in order: the body size (413), the headers' presence and shape (400), the
signature over the raw body (401), the timestamp within ``tolerance_s`` (400); then stores the
delivery (``UNIQUE (provider, delivery_id)``: a replay is acknowledged and ignored; concurrent
deliveries share one INSERT, batcher.py) and only then is the 200 sent. The worker claims pending deliveries (``FOR UPDATE SKIP LOCKED`` and a lease, so
replicas share the work and a crash mid-handler is retried after the lease), runs the provider's
handler and records the result. A delivery with no handler is kept as ``unhandled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from nattery_contracts.aio import raise_if_cancelling
from nattery_integration.settings import WebhookSettings
from nattery_integration.webhooks import repository, signature
from nattery_integration.webhooks.batcher import DeliveryBatcher
from nattery_integration.webhooks.registry import WebhookDelivery, WebhookHandler
from nattery_shared.errors import BadRequest, NatteryError, NotFound, Unauthorized
from nattery_shared.retry import Backoff, RetryLoop

log = logging.getLogger(__name__)

WEBHOOKS_RECEIVED = Counter(
    "nattery_webhook_deliveries_total",
    "Inbound webhook deliveries by outcome (accepted, duplicate, bad_signature, stale, too_large, malformed)",
    ["provider", "outcome"],
)
WEBHOOKS_PROCESSED = Counter(
    "nattery_webhook_processed_total",
    "Webhook deliveries handled by the worker (processed, retried, failed, unhandled)",
    ["provider", "outcome"],
)


class PayloadTooLarge(NatteryError):
    status_code = 413
    code = "payload_too_large"


@dataclass(frozen=True)
class Accepted:
    delivery_id: str
    duplicate: bool


class WebhookService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        handlers: Mapping[str, WebhookHandler],
        settings: WebhookSettings,
        *,
        batch: int = 20,
    ) -> None:
        self.pool = pool
        self.handlers = dict(handlers)
        self.settings = settings
        self._batch = batch
        self._batcher = DeliveryBatcher(pool)
        self._keys: dict[str, bytes] = {}
        for provider, secret in settings.secrets.items():
            try:
                self._keys[provider] = signature.secret_key(secret.get_secret_value())
            except ValueError as err:
                raise ValueError(f"integration.webhooks.secrets.{provider}: {err}") from err
        # Drains pending deliveries when poked (a new one was stored) or every worker_poll_s; a turn
        # that cannot reach PostgreSQL is tried again after worker_poll_s, logged once until it works.
        self._worker = RetryLoop(
            self._drain,
            name="webhook worker",
            logger=log,
            every_s=settings.worker_poll_s,
            backoff=Backoff(initial_s=settings.worker_poll_s, max_s=settings.worker_poll_s),
        )

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    def key_for(self, provider: str) -> bytes:
        key = self._keys.get(provider)
        if key is None:
            raise NotFound(f"no webhook endpoint for provider {provider!r}")
        return key

    def too_large(self, provider: str) -> PayloadTooLarge:
        WEBHOOKS_RECEIVED.labels(provider, "too_large").inc()
        return PayloadTooLarge(
            f"webhook body larger than {self.settings.max_body_bytes} bytes",
            details={"limit_bytes": self.settings.max_body_bytes},
        )

    def verify(
        self,
        provider: str,
        *,
        delivery_id: str | None,
        timestamp: str | None,
        sig: str | None,
        body: bytes,
        now: float | None = None,
    ) -> datetime:
        """Raise 400/401 unless the delivery is authentic and fresh; returns its signing time."""
        key = self.key_for(provider)
        if not sig:
            WEBHOOKS_RECEIVED.labels(provider, "bad_signature").inc()
            raise Unauthorized("missing webhook-signature header")
        if (
            not delivery_id
            or len(delivery_id) > 200
            or "." in delivery_id
            or not (delivery_id.isascii() and delivery_id.isprintable())  # a NUL would not even store
        ):
            WEBHOOKS_RECEIVED.labels(provider, "malformed").inc()
            raise BadRequest(
                "webhook-id header missing or malformed (1-200 printable ASCII characters, no '.')"
            )
        if not timestamp or not timestamp.isdigit() or len(timestamp) > 12:
            WEBHOOKS_RECEIVED.labels(provider, "malformed").inc()
            raise BadRequest("webhook-timestamp header missing or not integer Unix seconds")
        if not signature.verify(key, delivery_id, timestamp, body, sig):
            WEBHOOKS_RECEIVED.labels(provider, "bad_signature").inc()
            raise Unauthorized("webhook signature does not match")
        skew_s = (now if now is not None else time.time()) - int(timestamp)
        if abs(skew_s) > self.settings.tolerance_s:
            WEBHOOKS_RECEIVED.labels(provider, "stale").inc()
            raise BadRequest(
                f"webhook-timestamp is {abs(skew_s):.0f} s from now (at most {self.settings.tolerance_s} s)",
                details={"field": "webhook-timestamp"},
            )
        return datetime.fromtimestamp(int(timestamp), UTC)

    async def store(self, provider: str, delivery_id: str, signed_at: datetime, body: bytes) -> Accepted:
        """Returns once the delivery is committed (batched with concurrent ones: batcher.py); raises
        StoreUnavailable (503) when it could not be stored."""
        duplicate = not await self._batcher.store(provider, delivery_id, signed_at, body)
        WEBHOOKS_RECEIVED.labels(provider, "duplicate" if duplicate else "accepted").inc()
        if not duplicate:
            self.poke()
        return Accepted(delivery_id, duplicate)

    # --- worker ----------------------------------------------------------------------------------
    def poke(self) -> None:
        """Drain now rather than at the next poll (a delivery was stored)."""
        self._worker.poke()

    def stop(self) -> None:
        """End :meth:`run` at its next turn, even if a client swallowed the task's cancellation."""
        self._worker.stop()

    async def run(self) -> None:
        await self._worker.run()

    async def _drain(self) -> None:
        while await self.process_pending() == self._batch:
            pass

    async def process_pending(self) -> int:
        """Claim up to a batch of pending deliveries and handle them; returns how many were claimed."""
        async with self.pool.connection() as conn:
            rows = await repository.claim(conn, self.settings.lease_s, self._batch)
        deliveries = [WebhookDelivery(**row) for row in rows]
        unhandled = [d for d in deliveries if d.provider not in self.handlers]
        if unhandled:  # kept for when a handler comes; one statement for the batch
            async with self.pool.connection() as conn:
                await repository.mark_many(conn, [d.id for d in unhandled], "unhandled")
            for d in unhandled:
                WEBHOOKS_PROCESSED.labels(d.provider, "unhandled").inc()
        for delivery in deliveries:
            if delivery.provider in self.handlers:
                await self._handle(delivery, self.handlers[delivery.provider])
        return len(rows)

    async def _handle(self, delivery: WebhookDelivery, handler: WebhookHandler) -> None:
        try:
            await handler(delivery)
        except asyncio.CancelledError:
            raise  # the lease runs out and another pass (or replica) takes it again
        except Exception as err:
            raise_if_cancelling()
            error = f"{type(err).__name__}: {err}"[:1000]
            log.warning(
                "webhook %s/%s failed (attempt %d): %s",
                delivery.provider,
                delivery.delivery_id,
                delivery.attempts,
                error,
            )
            async with self.pool.connection() as conn:
                if delivery.attempts >= self.settings.max_attempts:
                    await repository.mark(conn, delivery.id, "failed", error)
                    WEBHOOKS_PROCESSED.labels(delivery.provider, "failed").inc()
                else:
                    delay_s = min(5.0 * 2 ** (delivery.attempts - 1), 3600.0)
                    await repository.retry_later(conn, delivery.id, delay_s, error)
                    WEBHOOKS_PROCESSED.labels(delivery.provider, "retried").inc()
            return
        async with self.pool.connection() as conn:
            await repository.mark(conn, delivery.id, "processed")
        WEBHOOKS_PROCESSED.labels(delivery.provider, "processed").inc()
