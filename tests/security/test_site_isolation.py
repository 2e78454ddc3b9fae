"""One compromised site, with its own MQTT username and password, cannot make the platform lose telemetry.

Attacks tried against the project's broker (infrastructure/mosquitto, site-guard plugin) while an
in-process device-service ingests two honest sites into InfluxDB:
- joining device-service's shared subscription (its real group and the production group name), another
  `$share` group, or `#`: refused (SUBACK 0x80) or delivering nothing of another site;
- connecting with device-service's client ids, another site's client id, or any id outside the rogue's
  own namespace (`<slug>` / `<slug>.<name>`): refused at CONNECT, and device-service's subscriber
  connections are never dropped (it logs every lost connection) nor is an honest site's session.
Each test asserts that every honest message lands in InfluxDB, in full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
from device_test_helpers import PIDFILE, Org, eventually, influx_count, provision, telemetry

from nattery_device.settings import DeviceSettings
from nattery_shared.testing import TEST_MQTT_PORT, TestIssuer

pytestmark = pytest.mark.timeout(120)

MESSAGES_PER_SITE = 40
SUBACK_FAILURE = 0x80
PRODUCTION_GROUP = "device-service"


@asynccontextmanager
async def mqtt(creds: dict[str, str], client_id: str, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        TEST_MQTT_PORT,
        username=creds["username"],
        password=creds["password"],
        identifier=client_id,
        timeout=5,
        **kwargs,
    ) as c:
        yield c


async def connect_retrying(creds: dict[str, str], client_id: str, stack: AsyncExitStack) -> aiomqtt.Client:
    """A freshly provisioned site: Mosquitto reloads its password file asynchronously after SIGHUP."""

    async def attempt() -> aiomqtt.Client | None:
        try:
            return await stack.enter_async_context(mqtt(creds, client_id))
        except aiomqtt.MqttError:
            # Mosquitto 2.0.11 clears its reload flag after reloading, so a SIGHUP that lands during
            # a reload (two sites provisioned back to back) is lost: ask again, as an operator would.
            os.kill(int(PIDFILE.read_text().strip()), signal.SIGHUP)
            return None

    client: aiomqtt.Client = await eventually(attempt, timeout_s=10, interval_s=0.5)
    return client


def codes(result: object) -> list[int]:
    return [int(getattr(code, "value", code)) for code in result]  # type: ignore[attr-defined]


async def ingest_ready(client: httpx.AsyncClient, site: dict[str, Any], honest: aiomqtt.Client) -> datetime:
    """Wait until device-service's shared subscription takes this site's telemetry (a warm-up point,
    re-sent until stored: same ts, so it is stored once). Returns the warm-up timestamp."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    topic = f"nattery/v1/{site['slug']}/inv1/telemetry"

    async def landed() -> bool:
        await honest.publish(topic, json.dumps(telemetry(0, start)), qos=1)
        return await influx_count(site["device"]["id"]) == 1

    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready, timeout_s=20)
    await eventually(landed, timeout_s=20, interval_s=0.5)
    return start


async def send_all(site: dict[str, Any], honest: aiomqtt.Client, start: datetime) -> None:
    topic = f"nattery/v1/{site['slug']}/inv1/telemetry"
    for seq in range(1, MESSAGES_PER_SITE + 1):
        payload = telemetry(seq, start + timedelta(seconds=5 * seq), battery_soc_pct=float(seq))
        await honest.publish(topic, json.dumps(payload), qos=1)  # QoS 1: returns on PUBACK


async def all_landed(sites: list[dict[str, Any]]) -> None:
    async def full() -> bool:
        counts = [await influx_count(site["device"]["id"]) for site in sites]
        return all(count == MESSAGES_PER_SITE + 1 for count in counts)

    await eventually(full, timeout_s=30, interval_s=0.2)
    # And never more (a duplicate point would overwrite, a count above means a stray series).
    assert [await influx_count(site["device"]["id"]) for site in sites] == [MESSAGES_PER_SITE + 1] * len(
        sites
    )


async def test_rogue_site_cannot_join_device_services_shared_subscription(
    client: httpx.AsyncClient, settings: DeviceSettings, test_issuer: TestIssuer
) -> None:
    org = Org(test_issuer)
    rogue_site, site_b, site_c = [await provision(client, org) for _ in range(3)]
    rogue_creds = rogue_site["mqtt"]
    group = settings.device.mqtt_share_group
    async with AsyncExitStack() as stack:
        honest = [
            await connect_retrying(s["mqtt"], f"{s['slug']}.bridge-inv1", stack) for s in (site_b, site_c)
        ]
        starts = [await ingest_ready(client, s, h) for s, h in zip((site_b, site_c), honest, strict=True)]

        rogue = await connect_retrying(rogue_creds, f"{rogue_creds['username']}.rogue", stack)
        shared = [
            f"$share/{group}/nattery/v1/+/+/telemetry",
            f"$share/{group}/nattery/v1/+/+/state",
            f"$share/{PRODUCTION_GROUP}/nattery/v1/+/+/telemetry",
            f"$share/{PRODUCTION_GROUP}/#",
            "$share/rogue/#",
            f"$share/rogue/nattery/v1/{rogue_creds['username']}/#",
        ]
        for topic_filter in shared:
            assert codes(await rogue.subscribe(topic_filter, qos=1)) == [SUBACK_FAILURE], topic_filter
        # `#` and another site's prefix: acl_file grants the SUBSCRIBE, delivery is checked per message.
        assert codes(await rogue.subscribe("#", qos=1))[0] in (1, SUBACK_FAILURE)
        assert codes(await rogue.subscribe(f"nattery/v1/{site_b['slug']}/#", qos=1))[0] in (1, SUBACK_FAILURE)

        for site, h, start in zip((site_b, site_c), honest, starts, strict=True):
            await send_all(site, h, start)
        await all_landed([site_b, site_c])

        # Nothing of another site reached the rogue: its own sentinel, published after every honest
        # message was acknowledged (so routed), is the first and only thing it receives.
        sentinel_topic = f"nattery/v1/{rogue_creds['username']}/inv1/state"
        await rogue.publish(sentinel_topic, b"sentinel", qos=1)
        received: list[str] = []
        async with asyncio.timeout(10):
            async for message in rogue.messages:
                received.append(str(message.topic))
                if message.payload == b"sentinel":
                    break
        assert received == [sentinel_topic]


async def test_rogue_site_cannot_take_over_another_clients_id(
    client: httpx.AsyncClient,
    settings: DeviceSettings,
    test_issuer: TestIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nattery_device.mqtt.subscriber")
    org = Org(test_issuer)
    rogue_site, site_b, site_c = [await provision(client, org) for _ in range(3)]
    rogue_creds, slug = rogue_site["mqtt"], rogue_site["mqtt"]["username"]
    service_id = settings.device.mqtt_client_id
    async with AsyncExitStack() as stack:
        honest_ids = [f"{s['slug']}.bridge-inv1" for s in (site_b, site_c)]
        honest = [
            await connect_retrying(s["mqtt"], cid, stack)
            for s, cid in zip((site_b, site_c), honest_ids, strict=True)
        ]
        starts = [await ingest_ready(client, s, h) for s, h in zip((site_b, site_c), honest, strict=True)]
        # device-service's subscribers are connected (ingest_ready): from here on they must log no lost
        # connection and no reconnect.
        seen_before = len(caplog.records)
        # The rogue's credentials are valid: its own namespace is admitted.
        async with mqtt(rogue_creds, slug), mqtt(rogue_creds, f"{slug}.anything"):
            pass

        stolen = [
            f"{service_id}-telemetry",  # device-service's ingest session (persistent, queued telemetry)
            f"{service_id}-control",
            "device-service",
            PRODUCTION_GROUP + "-telemetry",
            *honest_ids,  # another site's bridge session
            site_b["slug"],
            f"{slug}-x",  # a prefix without the separator is another slug's namespace
            f"{slug}.",
            "",  # no id: the broker would assign one outside the namespace
        ]
        for client_id in stolen:
            with pytest.raises(aiomqtt.MqttError):
                async with mqtt(rogue_creds, client_id, clean_session=True):
                    pass

        for site, h, start in zip((site_b, site_c), honest, starts, strict=True):
            await send_all(site, h, start)  # raises if an honest site's connection was taken over
        await all_landed([site_b, site_c])

    # device-service's subscribers log every lost connection and every (re)connect: none during the test.
    messages = [
        r.getMessage() for r in caplog.records[seen_before:] if r.name == "nattery_device.mqtt.subscriber"
    ]
    assert seen_before > 0 and any("connected (session present" in r.getMessage() for r in caplog.records)
    assert not [m for m in messages if "connection lost" in m or "connected (session present" in m], messages


async def test_a_site_cannot_be_named_after_the_brokers_service_account(
    client: httpx.AsyncClient, test_issuer: TestIssuer
) -> None:
    from device_test_helpers import LIMITS

    org = Org(test_issuer)
    body = {"slug": PRODUCTION_GROUP, "name": "Impostor", "safety_limits": LIMITS}
    response = await client.post("/sites", json=body, headers=org.admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == ["body", "slug"]
