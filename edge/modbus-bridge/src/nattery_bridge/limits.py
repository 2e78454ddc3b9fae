"""The site's limits: the installation's hard limits (local settings) and the operating limits an admin
may narrow with ``set_limits``, persisted in the local database."""

from __future__ import annotations

from pydantic import ValidationError

from nattery_contracts.mqtt import SafetyLimits

from . import envelope
from .store import Store

STORE_KEY = "limits"


class SiteLimits:
    def __init__(self, hard: SafetyLimits, store: Store) -> None:
        self.hard = hard
        self.store = store
        self._operating: SafetyLimits | None = None

    @property
    def operating(self) -> SafetyLimits:
        """The persisted admin limits if they are inside the hard limits (the local configuration may
        have been narrowed since they were set), else the hard limits."""
        if self._operating is None:
            self._operating = self.hard
            raw = self.store.get_json(STORE_KEY)
            if raw:
                try:
                    lim = SafetyLimits.model_validate(raw)
                    if not envelope.within(lim, self.hard):
                        self._operating = lim
                except ValidationError:
                    pass
        return self._operating

    def problems(self, limits: SafetyLimits) -> list[str]:
        """Why ``limits`` cannot be set (outside the hard limits); empty = they can."""
        return envelope.within(limits, self.hard)

    def set(self, limits: SafetyLimits) -> None:
        self.store.set_json(STORE_KEY, limits.model_dump(mode="json"))
        self._operating = None
