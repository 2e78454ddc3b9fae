"""``dispatch.status_changed`` as trading announces it (a dispatch decided, or its window over)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from nattery_contracts.events import CloudEvent, DispatchStatus, DispatchStatusChanged, EventType, make_event
from nattery_shared.rabbit import event_source
from nattery_trading.dispatches.repository import DispatchRow

SOURCE = event_source("trading")


def status_changed(
    dispatch_id: uuid.UUID,
    org_id: uuid.UUID,
    site_id: uuid.UUID,
    status: DispatchStatus,
    reason: str | None,
    at: datetime,
) -> CloudEvent[Any]:
    return make_event(
        EventType.DISPATCH_STATUS_CHANGED,
        DispatchStatusChanged(
            dispatch_id=dispatch_id, org_id=org_id, site_id=site_id, status=status, reason=reason, at=at
        ),
        source=SOURCE,
        subject=str(site_id),
    )


def executed(d: DispatchRow, at: datetime) -> CloudEvent[Any]:
    return status_changed(d.dispatch_id, d.org_id, d.site_id, DispatchStatus.EXECUTED, "window ended", at)
