# ruff: noqa: F811  (the fixtures imported from market_fixtures are parameters of the tests)
"""The whole service: an org's Octopus connection (made through the API) makes the markets job fetch
Agile import and Outgoing export for its region from the replay server, store both days complete and
report the run; the provider health and the job list show it."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from psycopg_pool import AsyncConnectionPool

from nattery_integration.app import create_app
from nattery_integration.markets.prices import london_day_window
from nattery_integration.markets.service import octopus_days
from nattery_integration.replay.runner import ReplayServer
from nattery_integration.settings import ProviderSettings
from nattery_shared.testing import TestIssuer, bearer, eventually

sys.path.insert(0, str(Path(__file__).parent))
from integration_test_helpers import integration_settings
from market_fixtures import pool, replay  # noqa: F401

pytestmark = pytest.mark.timeout(60)


async def test_an_octopus_connection_gets_its_prices(
    replay: ReplayServer, pool: AsyncConnectionPool, test_issuer: TestIssuer
) -> None:
    org = uuid.uuid4()
    providers = {
        p: ProviderSettings(base_url=replay.base_url(p) + "/")
        for p in ("octopus", "elexon", "modo", "entsoe", "open_meteo")
    }
    settings = integration_settings(test_issuer, **providers)
    region = "ABCDEFGHJKLMNP"[uuid.uuid4().int % 14]
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://i") as c,
    ):
        r = await c.post(
            "/connections",
            headers=bearer(test_issuer, org),
            json={
                "provider": "octopus",
                "name": "agile",
                "settings": {"region": region, "export_product_code": "AGILE-OUTGOING-19-05-13"},
            },
        )
        assert r.status_code == 201, r.text

        async def stored() -> list[tuple[str, datetime]]:
            async with pool.connection() as conn:
                # Run now rather than at the next slot; again on every poll, since a run that was
                # already going when the connection appeared sets its own next run when it ends.
                await conn.execute(
                    "UPDATE jobs SET next_run_at = now() WHERE name = 'markets.octopus' AND lease_until IS NULL"
                )
                cur = await conn.execute(
                    "SELECT direction, window_start FROM price_sets WHERE market = 'octopus-agile' "
                    "AND region = %s ORDER BY 1, 2",
                    (region,),
                )
                rows = [(r["direction"], r["window_start"]) for r in await cur.fetchall()]
            return rows if len(rows) >= 2 * len(days) else []

        days = [london_day_window(d)[0] for d in octopus_days(datetime.now(UTC))]
        rows = await eventually(stored, timeout_s=30)
        assert rows == [(d, s) for d in ("export", "import") for s in days]

        async def reported() -> bool:
            jobs = (await c.get("/jobs", headers=bearer(test_issuer, org, "viewer"))).json()
            octopus = next(j for j in jobs if j["name"] == "markets.octopus")
            return octopus["last_outcome"] == "ok" and "up to date" in (octopus["last_message"] or "")

        await eventually(reported)
        assert replay.state.requests["octopus"] >= 2 * len(days)
