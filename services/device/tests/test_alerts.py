"""Alert rules and alerts on the real servers: telemetry and fault events through the real broker, the
offline check across a restart, acknowledgement and manual resolve, org isolation, validation, and the
``alert.raised`` / ``alert.resolved`` events on RabbitMQ."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from device_test_helpers import (
    EventCapture,
    Org,
    SiteClient,
    app_client,
    device_settings,
    eventually,
    provision,
    telemetry,
)

from nattery_shared.testing import TestIssuer

THRESHOLD = {
    "name": "grid import high",
    "kind": "threshold",
    "severity": "critical",
    "field": "grid_power_w",
    "operator": "gt",
    "value": 1000,
    "hysteresis": 200,
}


async def _rule(client: httpx.AsyncClient, org: Org, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/alert-rules", json=body, headers=org.operator)
    assert response.status_code == 201, response.text
    rule: dict[str, Any] = response.json()
    return rule


async def _alerts(client: httpx.AsyncClient, org: Org, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/alerts", params=params, headers=org.viewer)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _edge(site: dict[str, Any]) -> SiteClient:
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    return edge


class Clock:
    """Sample timestamps one second apart (the rules measure durations on them)."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)
        self.seq = 0

    def sample(self, **values: float) -> dict[str, Any]:
        self.t += timedelta(seconds=1)
        self.seq += 1
        sample: dict[str, Any] = telemetry(self.seq, self.t, **values)
        return sample


async def test_threshold_raises_once_while_flapping_and_resolves(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    rule = await _rule(client, org, THRESHOLD)
    band = await _rule(
        client,
        org,
        {
            "name": "PV out of range",
            "kind": "band",
            "field": "pv_power_w",
            "low": 0,
            "high": 5000,
            "for_s": 2,
        },
    )
    edge = await _edge(site)
    clock = Clock()
    async with EventCapture("alert.raised", "alert.resolved") as events:
        await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=1500, pv_power_w=100))
        raised = await eventually(lambda: events.data("alert.raised", rule_id=rule["id"]))
        assert raised[0]["device_id"] == device_id and raised[0]["severity"] == "critical"
        assert raised[0]["value"] == 1500 and raised[0]["code"] == "threshold:grid_power_w"

        # Flapping around the threshold, within the hysteresis (clears below 800): still one alert.
        # The band rule's pv_power_w is out of range for 1 s only (for_s 2): pending, never raised.
        for value in (900, 1100, 850, 1200, 950, 1010):
            await asyncio.to_thread(
                edge.publish, "telemetry", clock.sample(grid_power_w=value, pv_power_w=6000)
            )
            await asyncio.to_thread(
                edge.publish, "telemetry", clock.sample(grid_power_w=value, pv_power_w=100)
            )
        await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=500, pv_power_w=100))
        resolved = await eventually(lambda: events.data("alert.resolved", rule_id=rule["id"]))
        assert resolved[0]["alert_id"] == raised[0]["alert_id"] and resolved[0]["resolution"] == "cleared"
        assert len(events.data("alert.raised", rule_id=rule["id"])) == 1
        assert events.data("alert.raised", rule_id=band["id"]) == []

        # The band rule fires once the reading stays outside for 2 s.
        for _ in range(3):
            await asyncio.to_thread(edge.publish, "telemetry", clock.sample(pv_power_w=-50))
        await eventually(lambda: events.data("alert.raised", rule_id=band["id"]))

    alerts = await _alerts(client, org, rule_id=rule["id"])
    assert len(alerts) == 1 and alerts[0]["state"] == "resolved" and alerts[0]["resolution"] == "cleared"
    detail = (await client.get(f"/alerts/{alerts[0]['id']}", headers=org.viewer)).json()
    assert [h["action"] for h in detail["history"]] == ["raised", "resolved"]
    assert (await _alerts(client, org, state="open", device_id=device_id))[0]["rule_id"] == band["id"]
    edge.close()


async def test_fault_rule_from_edge_events(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    rules = (await client.get("/alert-rules", headers=org.viewer)).json()
    fault = next(r for r in rules if r["default_key"] == "inverter_fault")
    edge = await _edge(site)

    def event(state: str) -> dict[str, Any]:
        return {
            "ts": datetime.now(UTC).isoformat(),
            "code": "F13",
            "severity": "critical" if state == "raised" else "info",
            "message": f"inverter fault F13 {state}",
            "details": {"state": state},
        }

    async with EventCapture("alert.raised", "alert.resolved") as events:
        await asyncio.to_thread(edge.publish, "event", event("raised"))
        raised = await eventually(lambda: events.data("alert.raised", rule_id=fault["id"]))
        assert "F13" in raised[0]["message"]
        await asyncio.to_thread(edge.publish, "event", event("cleared"))
        await eventually(lambda: events.data("alert.resolved", alert_id=raised[0]["alert_id"]))
    edge.close()


async def test_acknowledge_and_manual_resolve(client: httpx.AsyncClient, test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    site = await provision(client, org)
    rule = await _rule(client, org, THRESHOLD)
    edge = await _edge(site)
    clock = Clock()
    async with EventCapture("alert.resolved") as events:
        await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=2000))
        alert = (await eventually(lambda: _alerts(client, org, rule_id=rule["id"])))[0]
        url = f"/alerts/{alert['id']}"

        assert (await client.post(f"{url}/acknowledge", json={}, headers=org.viewer)).status_code == 403
        response = await client.post(f"{url}/acknowledge", json={"comment": "on it"}, headers=org.operator)
        assert response.status_code == 200, response.text
        acked = response.json()
        assert acked["state"] == "acknowledged" and acked["acknowledge_comment"] == "on it"
        assert acked["acknowledged_by"] and acked["acknowledged_at"]
        assert (await client.post(f"{url}/acknowledge", json={}, headers=org.operator)).status_code == 409

        response = await client.post(
            f"{url}/resolve", json={"comment": "fixed the CT clamp"}, headers=org.operator
        )
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["state"] == "resolved" and done["resolution"] == "manual"
        assert [h["action"] for h in done["history"]] == ["raised", "acknowledged", "resolved"]
        assert done["history"][2]["comment"] == "fixed the CT clamp"
        assert (await client.post(f"{url}/resolve", json={}, headers=org.operator)).status_code == 409
        resolved = await eventually(lambda: events.data("alert.resolved", alert_id=alert["id"]))
        assert resolved[0]["resolution"] == "manual" and resolved[0]["resolved_by"]

    # Still above: no new alert until the condition clears and comes back.
    await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=2100))
    await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=100))
    await asyncio.to_thread(edge.publish, "telemetry", clock.sample(grid_power_w=2200))
    again = await eventually(
        lambda: _has_open(client, org, rule["id"]),
    )
    assert again["id"] != alert["id"] and again["value"] == 2200
    assert len(await _alerts(client, org, rule_id=rule["id"])) == 2
    edge.close()


async def _has_open(client: httpx.AsyncClient, org: Org, rule_id: str) -> dict[str, Any] | None:
    items = await _alerts(client, org, rule_id=rule_id, state="open")
    return items[0] if items else None


async def test_rules_validation_roles_and_org_isolation(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    a, b = Org(test_issuer), Org(test_issuer)
    site_a = await provision(client, a)
    await provision(client, b)

    # Defaults exist for a new org.
    rules = (await client.get("/alert-rules", headers=a.viewer)).json()
    keys = {r["default_key"] for r in rules}
    assert {"offline", "inverter_fault", "battery_temperature_high", "soc_floor"} <= keys

    bad = {**THRESHOLD, "field": "grid_power_kw"}
    response = await client.post("/alert-rules", json=bad, headers=a.operator)
    assert response.status_code == 422 and "grid_power_kw" in response.text
    incomplete = {"name": "x", "kind": "band", "field": "pv_power_w", "low": 5}
    response = await client.post("/alert-rules", json=incomplete, headers=a.operator)
    assert response.status_code == 422 and "high" in response.text
    assert (await client.post("/alert-rules", json=THRESHOLD, headers=a.viewer)).status_code == 403

    # A rule may be narrowed only to the org's own site or device.
    foreign = {**THRESHOLD, "site_id": site_a["id"]}
    assert (await client.post("/alert-rules", json=foreign, headers=b.operator)).status_code == 422

    rule = await _rule(client, a, {**THRESHOLD, "site_id": site_a["id"], "device_kind": "inverter"})
    url = f"/alert-rules/{rule['id']}"
    assert (await client.get(url, headers=b.viewer)).status_code == 404
    assert (await client.put(url, json=THRESHOLD, headers=b.operator)).status_code == 404
    assert (await client.delete(url, headers=b.operator)).status_code == 404
    assert rule["id"] not in {r["id"] for r in (await client.get("/alert-rules", headers=b.viewer)).json()}

    edge = await _edge(site_a)
    await asyncio.to_thread(edge.publish, "telemetry", telemetry(1, grid_power_w=5000))
    alert = (await eventually(lambda: _alerts(client, a, rule_id=rule["id"])))[0]
    assert await _alerts(client, b) == []
    assert (await client.get(f"/alerts/{alert['id']}", headers=b.viewer)).status_code == 404
    assert (
        await client.post(f"/alerts/{alert['id']}/resolve", json={}, headers=b.operator)
    ).status_code == 404

    # Replacing the rule resolves its open alert; deleting it keeps the alert's history.
    response = await client.put(url, json={**THRESHOLD, "value": 9000}, headers=a.operator)
    assert response.status_code == 200 and response.json()["value"] == 9000
    replaced = (await client.get(f"/alerts/{alert['id']}", headers=a.viewer)).json()
    assert replaced["state"] == "resolved" and replaced["resolution"] == "rule_changed"
    assert (await client.delete(url, headers=a.operator)).status_code == 204
    assert (await client.get(url, headers=a.viewer)).status_code == 404
    kept = (await client.get(f"/alerts/{alert['id']}", headers=a.viewer)).json()
    assert kept["rule_id"] is None and kept["rule_name"] == "grid import high"
    edge.close()


async def test_offline_quiet_and_never_sent_across_a_restart(test_issuer: TestIssuer) -> None:
    org = Org(test_issuer)
    async with app_client(device_settings(test_issuer)) as client:
        quiet = await provision(client, org)
        silent = await provision(client, org)
        rule = await _rule(
            client,
            org,
            {"name": "offline 4 s", "kind": "offline", "offline_after_s": 4, "severity": "critical"},
        )
        edge = await _edge(quiet)
        await asyncio.to_thread(edge.publish, "telemetry", telemetry(1))
        await eventually(lambda: _device_status(client, org, quiet["device"]["id"], "online"))
    # device-service is down while the window passes; a new instance raises both from stored state.
    async with (
        EventCapture("alert.raised", "alert.resolved") as events,
        app_client(device_settings(test_issuer)) as client,
    ):
        for site in (quiet, silent):
            await eventually(
                lambda site=site: events.data(
                    "alert.raised", rule_id=rule["id"], device_id=site["device"]["id"]
                ),
                timeout_s=30,
            )
        never = (await _alerts(client, org, device_id=silent["device"]["id"], rule_id=rule["id"]))[0]
        assert "never sent" in never["message"] and never["state"] == "firing"

        # Data again resolves the quiet device's alert; the silent one stays open, raised once.
        await asyncio.to_thread(edge.publish, "telemetry", telemetry(2))
        await eventually(
            lambda: events.data("alert.resolved", rule_id=rule["id"], device_id=quiet["device"]["id"])
        )
        assert len(events.data("alert.raised", rule_id=rule["id"], device_id=silent["device"]["id"])) == 1
        assert (await _alerts(client, org, device_id=silent["device"]["id"], state="open"))[0]["id"] == never[
            "id"
        ]
    edge.close()


async def _device_status(client: httpx.AsyncClient, org: Org, device_id: str, expected: str) -> bool:
    return bool((await client.get(f"/devices/{device_id}", headers=org.viewer)).json()["status"] == expected)
