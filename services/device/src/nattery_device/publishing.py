"""How device-service writes its events: the kit's transactional outbox (``nattery_shared.outbox``) in
the caller's transaction, published after the commit by the relay the lifespan runs (``app.py``), and
one CloudEvent ``source`` for everything it publishes (``nattery_shared.rabbit.event_source``)."""

from __future__ import annotations

from nattery_shared.outbox import Outbox
from nattery_shared.rabbit import event_source

SOURCE = event_source("device")
OUTBOX = Outbox(SOURCE)
