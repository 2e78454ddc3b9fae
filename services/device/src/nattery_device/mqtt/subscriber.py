"""Device ingest's MQTT 5 subscriber: the kit's :class:`nattery_shared.mqtt5.client.AckingSubscriber`
(PUBACK only after the data is durable; why it is hand-written and not paho is measured in
``nattery_shared/mqtt5/__init__.py``). Device's subscribers log under this module's name (``log``),
which operators' log filters and ``tests/security/test_site_isolation.py`` use."""

from __future__ import annotations

import logging

from nattery_shared.mqtt5.client import (
    AckingSubscriber,
    ConnectRefused,
    Delivery,
    forget_session,
    forget_session_async,
)

log = logging.getLogger(__name__)

__all__ = ["AckingSubscriber", "ConnectRefused", "Delivery", "forget_session", "forget_session_async", "log"]
