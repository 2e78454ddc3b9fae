"""Measured states (``site.state_measured``): stored once per event, folded into the slot's actuals; a
stored SOC far from the plan's re-plans the site."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from nattery_contracts.events import SiteStateMeasured
from nattery_trading.measured.repository import MeasuredStates, Outcome
from nattery_trading.schedules.service import PlanningService


class MeasuredStateService:
    def __init__(self, states: MeasuredStates, planning: PlanningService) -> None:
        self.states = states
        self.planning = planning

    async def apply(self, event_id: uuid.UUID, queue: str, data: SiteStateMeasured) -> Outcome:
        """Store a state (once per event id) and check the plan against its SOC."""
        slot = slot_of(data.window_start, data.window_end, self.planning.slot_minutes)
        outcome = await self.states.record(event_id, queue, data, slot)
        if outcome == "stored" and data.soc_pct is not None:
            await self.planning.check_drift(data.site_id, data.measured_at, data.soc_pct)
        return outcome


def slot_of(window_start: datetime, window_end: datetime, slot_minutes: int) -> datetime:
    """The slot an interval's measurements belong to: the one holding the interval's middle (slots
    are aligned on the UTC day, as the planner's)."""
    middle = (window_start + (window_end - window_start) / 2).astimezone(UTC)
    minutes = (middle.hour * 60 + middle.minute) // slot_minutes * slot_minutes
    return middle.replace(hour=minutes // 60, minute=minutes % 60, second=0, microsecond=0)
