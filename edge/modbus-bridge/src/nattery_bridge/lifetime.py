"""Maximum lifetime of a control at the bridge.

A control from the cloud says how long it is valid (``expires_at``, a schedule's ``valid_until``). The
bridge does not trust an arbitrarily long one: a ``set_power`` that says "until 2030" would keep a
battery charging for years if the cloud forgot it. Schedules live at most ``max_schedule_lifetime_s``
(48 h) and every other control ``max_control_lifetime_s`` (24 h) from the moment the bridge receives
them; the settings can lower these bounds, never raise them. A longer validity is clamped and the ack
says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SCHEDULE_LIFETIME_CEILING_S = 48 * 3600.0
CONTROL_LIFETIME_CEILING_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Lifetime:
    expires_at: datetime
    clamped: bool
    reason: str | None


def clamp(requested: datetime, received_at: datetime, max_lifetime_s: float, what: str) -> Lifetime:
    """``requested`` bounded by ``received_at + max_lifetime_s``; ``what`` names the field."""
    latest = received_at + timedelta(seconds=max_lifetime_s)
    if requested <= latest:
        return Lifetime(requested, False, None)
    hours = max_lifetime_s / 3600
    return Lifetime(
        latest,
        True,
        f"{what} {requested.isoformat()} clamped to {latest.isoformat()} (max lifetime {hours:g} h)",
    )
