"""Every outbound message of the bridge, built from the contract models and put in the outbox: command
acks, edge events and telemetry. Presence (retained state) and discovery are not queued: they are
re-sent on every connect by the MQTT link."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nattery_contracts.mqtt import (
    AckStatus,
    CommandAck,
    EdgeEvent,
    EventSeverity,
    Telemetry,
    TopicSuffix,
    topic,
)

from .outbox import Outbox

MAX_TEXT = 500  # characters of a reason or message (the contract's bound)


class Publisher:
    def __init__(self, site: str, device: str, outbox: Outbox, clock: Callable[[], datetime]) -> None:
        self.outbox = outbox
        self.now = clock
        self.ack_topic = topic(site, device, TopicSuffix.COMMAND_ACK)
        self.event_topic = topic(site, device, TopicSuffix.EVENT)
        self.telemetry_topic = topic(site, device, TopicSuffix.TELEMETRY)

    def ack(
        self, cmd_id: str, status: AckStatus, reason: str | None = None, applied: dict[str, Any] | None = None
    ) -> CommandAck:
        ack = CommandAck(
            id=uuid.UUID(cmd_id),
            status=status,
            reason=reason[:MAX_TEXT] if reason else None,
            applied=applied or {},
            ts=self.now(),
        )
        self.resend_ack(ack)
        return ack

    def resend_ack(self, ack: CommandAck) -> None:
        self._put("ack", self.ack_topic, ack.model_dump_json().encode())

    def event(self, code: str, severity: EventSeverity, message: str, **details: Any) -> None:
        ev = EdgeEvent(
            ts=self.now(), code=code, severity=severity, message=message[:MAX_TEXT], details=details
        )
        self._put("event", self.event_topic, ev.model_dump_json().encode())

    def telemetry(self, values: dict[str, float]) -> Telemetry:
        seq = self.outbox.next_telemetry_seq()
        t = Telemetry(ts=self.now(), seq=seq, values=values)
        self.outbox.put_telemetry(self.telemetry_topic, seq, t.model_dump_json().encode())
        self._report_drops()
        return t

    def _put(self, kind: str, t: str, payload: bytes) -> None:
        self.outbox.put(kind, t, payload)
        self._report_drops()

    def _report_drops(self) -> None:
        # taken before publishing, so the report's own row cannot report itself again
        summary = self.outbox.due_drop_report()
        if summary is not None:
            self.event(
                "outbox.dropped",
                EventSeverity.WARNING,
                f"outbox over its disk budget: dropped {summary.rows} oldest telemetry rows",
                rows=summary.rows,
                budget_bytes=summary.budget_bytes,
            )
