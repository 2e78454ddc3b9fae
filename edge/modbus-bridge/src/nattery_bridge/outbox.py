"""Outbox accounting in one place: every outbound message enters here, every PUBACK leaves here.

The rows live in the local database (:class:`~nattery_bridge.store.Store`); this class keeps the
gauges (rows, bytes), the counters (dropped to stay in the disk budget, published per kind), the
event that wakes the MQTT drain, and the summary of drops not yet reported as an ``outbox.dropped``
event (at most one a minute, so a long outage does not fill the outbox with reports of itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import Metrics
from .store import DropReport, OutboxRow, Store

DROP_REPORT_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class DropSummary:
    rows: int  # dropped since the last report
    budget_bytes: int


class Outbox:
    def __init__(
        self, store: Store, metrics: Metrics, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.mono = monotonic
        self.wake = asyncio.Event()  # set on every new row: the MQTT drain waits on it
        self._unreported_rows = 0
        self._last_report: float | None = None
        self.update_gauges()

    # ------------------------------------------------------------ in
    def put(self, kind: str, topic: str, payload: bytes, retain: bool = False) -> None:
        self._added(self.store.enqueue(kind, topic, payload, retain))

    def next_telemetry_seq(self) -> int:
        return self.store.next_seq()

    def put_telemetry(self, topic: str, seq: int, payload: bytes) -> None:
        """A telemetry row; its ``seq`` is persisted in the same transaction."""
        self._added(self.store.enqueue_telemetry(topic, seq, payload))

    def _added(self, dropped: DropReport | None) -> None:
        if dropped:
            self.metrics.outbox_dropped.inc(dropped.rows)
            self._unreported_rows += dropped.rows
        self.update_gauges()
        self.wake.set()

    def due_drop_report(self) -> DropSummary | None:
        """Drops not reported yet, if the last report is at least a minute old (then reset)."""
        if not self._unreported_rows:
            return None
        now = self.mono()
        if self._last_report is not None and now - self._last_report < DROP_REPORT_INTERVAL_S:
            return None
        summary = DropSummary(self._unreported_rows, self.store.budget_bytes)
        self._unreported_rows = 0
        self._last_report = now
        return summary

    # ------------------------------------------------------------ out
    def peek(self, limit: int) -> list[OutboxRow]:
        return self.store.peek(limit)

    def acknowledged(self, rows: list[OutboxRow]) -> None:
        """``rows`` were PUBACKed by the broker: delete and count them."""
        self.store.remove([r.id for r in rows])
        for r in rows:
            self.metrics.published.labels(r.kind).inc()
        self.update_gauges()

    def update_gauges(self) -> None:
        self.metrics.outbox_rows.set(self.store.outbox_rows)
        self.metrics.outbox_bytes.set(self.store.outbox_bytes)
