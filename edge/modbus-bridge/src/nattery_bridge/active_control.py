"""The active control, persisted: what the cloud (or a local stop) last asked for.

``kind``: ``mode`` | ``power`` (one-off, until ``expires_at``), ``schedule`` (slots until
``valid_until``) or ``estop`` (latched, no expiry). It survives restarts in the local database; one
stored by an older bridge with a longer lifetime is clamped when it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nattery_contracts.mqtt import BatteryMode, SetScheduleParams

from . import lifetime
from .envelope import Target
from .settings import BridgeSettings
from .store import Store

STORE_KEY = "control"


@dataclass
class Active:
    """The persisted control. ``kind``: mode | power | schedule | estop."""

    kind: str
    command_id: str
    issued_at: datetime
    expires_at: datetime | None
    target: Target | None = None
    schedule: SetScheduleParams | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "command_id": self.command_id,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "target": self.target.describe() if self.target else None,
            "schedule": self.schedule.model_dump(mode="json") if self.schedule else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Active:
        t = d.get("target")
        return cls(
            kind=str(d["kind"]),
            command_id=str(d["command_id"]),
            issued_at=datetime.fromisoformat(d["issued_at"]),
            expires_at=datetime.fromisoformat(d["expires_at"]) if d.get("expires_at") else None,
            target=Target(BatteryMode(t["mode"]), float(t["power_w"] or 0), t["target_soc_pct"])
            if t
            else None,
            schedule=SetScheduleParams.model_validate(d["schedule"]) if d.get("schedule") else None,
        )


def lifetime_cap_s(settings: BridgeSettings, kind: str) -> float:
    """The longest a control of ``kind`` may run from its receipt (``lifetime.py``)."""
    return settings.max_schedule_lifetime_s if kind == "schedule" else settings.max_control_lifetime_s


class ActiveControl:
    def __init__(self, settings: BridgeSettings, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        raw = store.get_json(STORE_KEY)
        self.active: Active | None = Active.from_json(raw) if raw else None
        a = self.active
        if a is not None and a.expires_at is not None:  # stored by an older bridge
            cap = lifetime_cap_s(settings, a.kind)
            a.expires_at = lifetime.clamp(a.expires_at, clock(), cap, "expires_at").expires_at

    @property
    def estop(self) -> bool:
        return self.active is not None and self.active.kind == "estop"

    def set(self, active: Active | None) -> None:
        self.active = active
        self.store.set_json(STORE_KEY, active.to_json() if active else None)

    def issued_before_estop(self, issued_at: datetime) -> bool:
        """A control issued before the latched emergency stop cannot release it."""
        return self.estop and self.active is not None and issued_at <= self.active.issued_at
