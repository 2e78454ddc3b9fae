"""What the analytics tests share besides fixtures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from nattery_contracts.events import CloudEvent


@dataclass
class Received:
    """Events collected from RabbitMQ as they arrived (already validated against the contract)."""

    events: list[CloudEvent[Any]] = field(default_factory=list)

    def for_site(self, site_id: uuid.UUID) -> list[CloudEvent[Any]]:
        return [e for e in self.events if e.subject == str(site_id)]
