"""How a business area plugs into the integration service without editing app.py.

An area (``markets``, ``weather``, ``sites``, ...) puts ``AREA = Area(...)`` in
``nattery_integration/<area>/registration.py``; app.py imports the registration module of every name in
``AREA_PACKAGES`` that has one, and tests pass extra areas to ``create_app(settings, areas=[...])``.

    # nattery_integration/markets/registration.py
    def jobs(ctx: IntegrationContext) -> list[JobSpec]:
        connector = OctopusConnector(ctx.clients.get("octopus"), ...)
        return [JobSpec(name="octopus.agile", handler=connector.run_job, next_run=..., provider="octopus")]

    AREA = Area(name="markets", jobs=jobs, routers=[router])

- ``jobs(ctx)``: the area's scheduled jobs (jobs/registry.py).
- ``webhook_handlers(ctx)``: ``{provider: handler}`` for ``POST /webhooks/{provider}`` (webhooks/registry.py);
  the provider also needs a secret in ``NATTERY_INTEGRATION__WEBHOOKS__SECRETS``.
- ``start(ctx)``: awaited once in the lifespan after everything is built: register RabbitMQ consumers
  (``ctx.bus.consume``), start background loops with ``ctx.spawn(name, coro)`` (cancelled at shutdown).
- ``routers``: FastAPI routers to include (every route needs its row in tests/authz).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter

from nattery_integration.jobs.registry import JobSpec

if TYPE_CHECKING:
    from nattery_integration.context import IntegrationContext
    from nattery_integration.webhooks.registry import WebhookHandler

AREA_PACKAGES = ("markets", "weather", "sites")


@dataclass(frozen=True)
class Area:
    name: str
    jobs: Callable[[IntegrationContext], Sequence[JobSpec]] | None = None
    webhook_handlers: Callable[[IntegrationContext], Mapping[str, WebhookHandler]] | None = None
    start: Callable[[IntegrationContext], Awaitable[None]] | None = None
    routers: Sequence[APIRouter] = field(default_factory=tuple)


def discover() -> list[Area]:
    """The ``AREA`` of each ``nattery_integration.<area>.registration`` module that exists."""
    found = []
    for package in AREA_PACKAGES:
        module_name = f"nattery_integration.{package}.registration"
        if importlib.util.find_spec(f"nattery_integration.{package}") is None:
            continue
        if importlib.util.find_spec(module_name) is None:
            continue
        area = getattr(importlib.import_module(module_name), "AREA", None)
        if isinstance(area, Area):
            found.append(area)
    return found
