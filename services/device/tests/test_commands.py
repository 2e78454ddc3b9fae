"""The command path end to end with a stand-in edge speaking the MQTT contract: REST and RabbitMQ
commands reach the device's command topic once, acknowledgements are tracked, every transition is an
event, idempotency keys, safety limits, expiry, org isolation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from device_test_helpers import (
    EventCapture,
    Org,
    SiteClient,
    app_client,
    device_settings,
    eventually,
    provision,
)

from nattery_contracts.events import CommandRequested, EventType, SchedulePublished, make_event
from nattery_contracts.mqtt import Command
from nattery_shared.rabbit import EventBus
from nattery_shared.testing import TestIssuer


@pytest.fixture
async def fast_client(test_issuer: TestIssuer) -> AsyncIterator[httpx.AsyncClient]:
    settings = device_settings(test_issuer, command_sweep_interval_s=0.5, command_resend_after_s=60)
    async with app_client(settings) as client:
        yield client


def commands_seen(edge: SiteClient) -> list[Command]:
    return [Command.model_validate_json(m.payload) for m in edge.messages if m.topic.endswith("/command")]


async def test_rest_command_is_delivered_acknowledged_and_tracked(
    fast_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    client = fast_client
    org = Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    await asyncio.to_thread(edge.subscribe, "command")  # returns on the SUBACK

    async with EventCapture("device.command_acknowledged") as events:
        body = {"type": "set_power", "params": {"battery_power_w": -2500}, "ttl_s": 120}
        key = {"Idempotency-Key": uuid.uuid4().hex}
        created = await client.post(
            f"/devices/{device_id}/commands", json=body, headers={**org.operator, **key}
        )
        assert created.status_code == 201, created.text
        command = created.json()
        assert command["state"] == "sent"

        delivered = await eventually(lambda: commands_seen(edge))
        assert len(delivered) == 1 and str(delivered[0].id) == command["id"]
        assert delivered[0].params == {"battery_power_w": -2500}

        again = await client.post(
            f"/devices/{device_id}/commands", json=body, headers={**org.operator, **key}
        )
        assert again.status_code == 200 and again.json()["id"] == command["id"]
        changed = await client.post(
            f"/devices/{device_id}/commands",
            json={**body, "params": {"battery_power_w": -100}},
            headers={**org.operator, **key},
        )
        assert changed.status_code == 409

        for status in ("accepted", "done"):
            ack = {
                "id": command["id"],
                "status": status,
                "applied": {"battery_power_w": -2500},
                "ts": datetime.now(UTC).isoformat(),
            }
            await asyncio.to_thread(edge.publish, "command/ack", ack)

        async def done() -> dict[str, Any] | None:
            body = (await client.get(f"/commands/{command['id']}", headers=org.viewer)).json()
            return body if body["state"] == "done" else None

        final = await eventually(done)
        assert [t["state"] for t in final["transitions"]] == ["pending", "sent", "accepted", "done"]
        assert final["edge_status"] == "done" and final["applied"] == {"battery_power_w": -2500}
        await eventually(
            lambda: len(events.data("device.command_acknowledged", command_id=command["id"])) == 4
        )
        states = [e["state"] for e in events.data("device.command_acknowledged", command_id=command["id"])]
        assert states == ["pending", "sent", "accepted", "done"]
    # Exactly once: a sentinel command sent after everything above goes out through the same MQTT
    # session, so once it has arrived any second copy of the first one would have arrived before it.
    sentinel = await client.post(
        f"/devices/{device_id}/commands", json={"type": "refresh"}, headers=org.operator
    )
    assert sentinel.status_code == 201, sentinel.text
    await eventually(lambda: any(str(c.id) == sentinel.json()["id"] for c in commands_seen(edge)))
    assert [str(c.id) for c in commands_seen(edge)] == [command["id"], sentinel.json()["id"]]
    edge.close()


async def test_commands_are_validated_scoped_and_expire(
    fast_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    client = fast_client
    org, other = Org(test_issuer), Org(test_issuer)
    site = await provision(client, org)
    device_id = site["device"]["id"]
    url = f"/devices/{device_id}/commands"

    too_much = await client.post(
        url, json={"type": "set_power", "params": {"battery_power_w": 6000}}, headers=org.operator
    )
    assert too_much.status_code == 422 and "max_discharge_w" in too_much.text
    bad_mode = await client.post(
        url, json={"type": "set_mode", "params": {"mode": "turbo"}}, headers=org.operator
    )
    assert bad_mode.status_code == 422 and "mode" in bad_mode.text
    unknown = await client.post(url, json={"type": "self_destruct"}, headers=org.operator)
    assert unknown.status_code == 422
    past = await client.post(
        url, json={"type": "refresh", "expires_at": "2020-01-01T00:00:00Z"}, headers=org.operator
    )
    assert past.status_code == 422 and "past" in past.text
    assert (await client.post(url, json={"type": "refresh"}, headers=org.viewer)).status_code == 403
    assert (await client.post(url, json={"type": "refresh"}, headers=other.operator)).status_code == 404

    # Nobody answers: sent, then expired by the sweeper once past expires_at.
    created = (await client.post(url, json={"type": "refresh", "ttl_s": 5}, headers=org.operator)).json()
    assert (await client.get(f"/commands/{created['id']}", headers=other.viewer)).status_code == 404

    async def expired() -> bool:
        body = (await client.get(f"/commands/{created['id']}", headers=org.viewer)).json()
        return bool(body["state"] == "expired")

    await eventually(expired, timeout_s=15)
    # A late ack for an expired command changes nothing.
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    ack = {"id": created["id"], "status": "done", "ts": datetime.now(UTC).isoformat()}
    await asyncio.to_thread(edge.publish, "command/ack", ack)
    # Sentinel: an ack for a live command, published after the late one on the same session; acks are
    # handled in order, so once it has been applied the late ack has been handled too.
    live = (await client.post(url, json={"type": "refresh", "ttl_s": 300}, headers=org.operator)).json()
    live_ack = {"id": live["id"], "status": "accepted", "ts": datetime.now(UTC).isoformat()}
    await asyncio.to_thread(edge.publish, "command/ack", live_ack)

    async def live_accepted() -> bool:
        body = (await client.get(f"/commands/{live['id']}", headers=org.viewer)).json()
        return bool(body["state"] == "accepted")

    await eventually(live_accepted)
    assert (await client.get(f"/commands/{created['id']}", headers=org.viewer)).json()["state"] == "expired"
    edge.close()


async def test_command_requested_and_schedule_published_events_become_commands(
    fast_client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    from pydantic import SecretStr

    from nattery_shared.settings import RabbitSettings
    from nattery_shared.testing import TEST_RABBIT_URL

    client = fast_client
    org = Org(test_issuer)
    site = await provision(client, org)
    edge = SiteClient(site["mqtt"]["username"], site["mqtt"]["password"])
    assert await asyncio.to_thread(edge.connect)
    await asyncio.to_thread(edge.subscribe, "command")  # returns on the SUBACK

    bus = EventBus(RabbitSettings(url=SecretStr(TEST_RABBIT_URL)), source="/tests/trading")
    bus.start()
    try:
        await bus.wait_connected(10)
        command_id = uuid.uuid4()
        now = datetime.now(UTC)
        requested = make_event(
            EventType.COMMAND_REQUESTED,
            CommandRequested(
                command_id=command_id,
                org_id=org.id,
                site_id=uuid.UUID(site["id"]),
                type="set_mode",
                params={"mode": "hold"},
                expires_at=now + timedelta(minutes=5),
                requested_by="trading:test",
            ),
            source="/tests/trading",
        )
        await bus.publish(requested)
        await bus.publish(requested)  # redelivered / duplicated: still one command
        schedule_id = uuid.uuid4()
        slot = {
            "start": now.isoformat(),
            "end": (now + timedelta(minutes=30)).isoformat(),
            "mode": "charge",
            "battery_power_w": -2000,
        }
        await bus.publish(
            make_event(
                EventType.SCHEDULE_PUBLISHED,
                SchedulePublished.model_validate(
                    {
                        "schedule_id": str(schedule_id),
                        "version": 1,
                        "org_id": str(org.id),
                        "site_id": site["id"],
                        "slots": [slot],
                        "valid_until": (now + timedelta(hours=1)).isoformat(),
                    }
                ),
                source="/tests/trading",
            )
        )
        seen = await eventually(lambda: len(commands_seen(edge)) >= 2 and commands_seen(edge), timeout_s=15)
        by_type = {c.type.value: c for c in seen}
        assert by_type["set_mode"].id == command_id and by_type["set_mode"].params == {"mode": "hold"}
        assert by_type["set_schedule"].params["slots"][0]["mode"] == "charge"
        assert (
            (await client.get(f"/commands/{command_id}", headers=org.viewer))
            .json()["source"]
            .startswith("event:")
        )
        # Sentinel: a third command.requested published after the duplicate; once its command has reached
        # the edge, a second command made from the duplicate would have been created before it.
        sentinel_id = uuid.uuid4()
        await bus.publish(
            make_event(
                EventType.COMMAND_REQUESTED,
                CommandRequested(
                    command_id=sentinel_id,
                    org_id=org.id,
                    site_id=uuid.UUID(site["id"]),
                    type="refresh",
                    expires_at=now + timedelta(minutes=5),
                    requested_by="trading:test",
                ),
                source="/tests/trading",
            )
        )
        await eventually(lambda: any(c.id == sentinel_id for c in commands_seen(edge)), timeout_s=15)
        # One command per event, whatever the duplicates; the sweeper may re-send an unanswered command
        # under the same id (at-least-once; the bridge is idempotent by id), so count distinct ids.
        assert {c.id for c in commands_seen(edge)} == {command_id, by_type["set_schedule"].id, sentinel_id}
    finally:
        await bus.close()  # its robust connection must not outlive the test, passed or failed
        edge.close()
