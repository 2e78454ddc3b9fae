"""How this service writes its events: the kit's transactional outbox (``nattery_shared.outbox``), in the
caller's transaction; the relay the lifespan runs (``app.py``) publishes them after the commit."""

from __future__ import annotations

from nattery_shared.outbox import Outbox
from nattery_shared.rabbit import event_source

OUTBOX = Outbox(event_source("integration"))
