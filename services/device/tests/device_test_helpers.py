"""Test helpers: settings for the local test servers, an in-process app, a site that speaks MQTT."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from nattery_device.settings import DeviceSection, DeviceSettings
from nattery_shared.settings import InfluxSettings
from nattery_shared.testing import (
    TEST_INFLUX_DB,
    TEST_INFLUX_URL,
    TEST_MQTT_PORT,
    TestIssuer,
    test_settings_kwargs,
)
from nattery_shared.testing import (
    eventually as eventually,  # re-exported: the device tests import it from here
)

ROOT = Path(__file__).resolve().parents[3]
PASSWD = ROOT / "var" / "mosquitto" / "passwd"
PIDFILE = ROOT / "var" / "mosquitto" / "mosquitto.pid"

LIMITS = {
    "soc_min_pct": 10,
    "soc_max_pct": 95,
    "max_charge_w": 5000,
    "max_discharge_w": 5000,
    "battery_temp_min_c": 0,
    "battery_temp_max_c": 50,
    "export_limit_w": 3680,
}


PROVISIONED: list[str] = []  # site slugs created by this test session, removed at its end


def remove_provisioned() -> None:
    """Delete the session's test sites and their broker credentials (one password-file rewrite)."""
    import psycopg

    from nattery_device.mqtt.credentials import PasswordFile
    from nattery_shared.testing import TEST_PG_DSN

    if not PROVISIONED:
        return
    with psycopg.connect(TEST_PG_DSN, options="-c search_path=device") as conn:
        conn.execute("DELETE FROM sites WHERE slug = ANY(%s)", (PROVISIONED,))
    PasswordFile(PASSWD, pid_file=PIDFILE).reconcile({}, set(PROVISIONED))
    PROVISIONED.clear()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def device_settings(issuer: TestIssuer, **device: Any) -> DeviceSettings:
    kwargs = test_settings_kwargs(issuer)
    kwargs["influx"] = InfluxSettings(
        url=TEST_INFLUX_URL, database=TEST_INFLUX_DB, batch_size=500, flush_interval_s=0.2
    )
    tag = uuid.uuid4().hex[:8]
    section = DeviceSection(
        mosquitto_password_file=PASSWD,
        mosquitto_pid_file=PIDFILE,
        mqtt_client_id=f"test-device-{tag}",
        mqtt_share_group=f"test{tag}",
        credentials_sync_s=device.pop("credentials_sync_s", 1.0),
        latest_every_s=device.pop("latest_every_s", 0.0),
        **device,
    )
    return DeviceSettings(**kwargs, device=section)


class Org:
    """An org with tokens for each role."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.id = uuid.uuid4()
        self.admin = {"Authorization": f"Bearer {issuer.token(role='admin', org=self.id)}"}
        self.operator = {"Authorization": f"Bearer {issuer.token(role='operator', org=self.id)}"}
        self.viewer = {"Authorization": f"Bearer {issuer.token(role='viewer', org=self.id)}"}
        self.viewer_token = issuer.token(role="viewer", org=self.id)


async def provision(client: httpx.AsyncClient, org: Org, *, kind: str = "inverter") -> dict[str, Any]:
    """A site with one device; returns the site body (with MQTT credentials) plus ``device``."""
    response = await client.post(
        "/sites",
        json={
            "slug": unique("site"),
            "name": "Test site",
            "timezone": "Europe/London",
            "safety_limits": LIMITS,
        },
        headers=org.admin,
    )
    assert response.status_code == 201, response.text
    site: dict[str, Any] = response.json()
    PROVISIONED.append(site["slug"])
    body: dict[str, Any] = {"slug": "inv1" if kind == "inverter" else "m1", "kind": kind}
    if kind == "meter":
        body["meter_category"] = "INJ"
    response = await client.post(f"/sites/{site['id']}/devices", json=body, headers=org.admin)
    assert response.status_code == 201, response.text
    site["device"] = response.json()
    return site


class SiteClient:
    """A site's MQTT connection (paho, MQTT 3.1.1 like the bridge's aiomqtt) with its own credentials."""

    def __init__(self, username: str, password: str, *, client_id: str | None = None) -> None:
        self.username = username
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"{username}.{unique('client')}"
        )
        self.client.username_pw_set(username, password)
        self.connect_rc: Any = None
        self.disconnected = threading.Event()
        self.connected = threading.Event()
        self.messages: list[paho.MQTTMessage] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connect_rc = rc
        if not rc.is_failure:
            self.connected.set()

    def connect(self, timeout_s: float = 5.0, *, retry_s: float = 3.0) -> bool:
        """Connect; retries refusals for ``retry_s`` because Mosquitto reloads its password file
        asynchronously after the SIGHUP (pass ``retry_s=0`` when a refusal is what you expect)."""
        give_up = time.monotonic() + retry_s
        while True:
            self.connect_rc = None
            self.client.connect("127.0.0.1", TEST_MQTT_PORT, keepalive=30)
            self.client.loop_start()
            deadline = time.monotonic() + timeout_s
            while self.connect_rc is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.connected.is_set() or time.monotonic() >= give_up:
                return self.connected.is_set()
            self.client.loop_stop()
            time.sleep(0.2)

    def publish(
        self, suffix: str, payload: dict[str, Any] | bytes, *, device: str = "inv1", retain: bool = False
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(
            f"nattery/v1/{self.username}/{device}/{suffix}", data, qos=1, retain=retain
        )
        info.wait_for_publish(5)

    def subscribe(self, suffix: str, device: str = "inv1", timeout_s: float = 5.0) -> None:
        """Subscribe and wait for the broker's SUBACK, so a message published next is not missed."""
        granted = threading.Event()
        codes: list[Any] = []

        def on_subscribe(_c: Any, _u: Any, _mid: int, reason_codes: list[Any], _p: Any) -> None:
            codes.extend(reason_codes)
            granted.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(f"nattery/v1/{self.username}/{device}/{suffix}", qos=1)
        assert granted.wait(timeout_s), f"no SUBACK for {suffix} within {timeout_s}s"
        assert codes and not any(code.is_failure for code in codes), f"subscription refused: {codes}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def telemetry(seq: int, ts: datetime | None = None, **values: float) -> dict[str, Any]:
    ts = ts or datetime.now(UTC)
    return {
        "ts": ts.isoformat(),
        "seq": seq,
        "values": values or {"battery_soc_pct": 50.0, "battery_power_w": -1200.0},
    }


async def influx_count(device_id: str, field: str = "battery_soc_pct", measurement: str = "inverter") -> int:
    q = f'SELECT count("{field}") FROM "{measurement}" WHERE "device" = \'{device_id}\''
    async with httpx.AsyncClient(base_url=TEST_INFLUX_URL, timeout=10) as http:
        response = await http.get("/query", params={"db": TEST_INFLUX_DB, "q": q})
    response.raise_for_status()
    series = response.json()["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


class EventCapture:
    """An exclusive queue on ``nattery.events`` collecting the CloudEvents of some routing keys."""

    def __init__(self, *routing_keys: str) -> None:
        self.routing_keys = routing_keys
        self.events: list[dict[str, Any]] = []
        self._connection: Any = None

    async def __aenter__(self) -> EventCapture:
        import aio_pika

        from nattery_shared.testing import TEST_RABBIT_URL

        self._connection = await aio_pika.connect_robust(TEST_RABBIT_URL)
        try:
            channel = await self._connection.channel()
            exchange = await channel.declare_exchange(
                "nattery.events", aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for key in self.routing_keys:
                await queue.bind(exchange, routing_key=key)

            async def on_message(message: Any) -> None:
                async with message.process():
                    self.events.append(json.loads(message.body))

            await queue.consume(on_message)
        except BaseException:
            await self._connection.close()  # a robust connection left open outlives the session
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._connection.close()

    def data(self, event_type: str, **match: str) -> list[dict[str, Any]]:
        return [
            e["data"]
            for e in self.events
            if e["type"] == event_type and all(str(e["data"].get(k)) == v for k, v in match.items())
        ]


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 30.0) -> None:
    """Until ``/readyz`` answers 200: the command publisher is connected and every MQTT subscription
    is granted. A test site's first message must not be published into a share group that does not
    exist yet (a new app has a new group; the broker queues nothing for it before its SUBACK)."""

    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await eventually(ready, timeout_s=timeout_s)


@asynccontextmanager
async def app_client(settings: DeviceSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (ingest included) for settings a test chose."""
    from asgi_lifespan import LifespanManager

    from nattery_device.app import create_app
    from nattery_device.mqtt.subscriber import forget_session

    app = create_app(settings)
    try:
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://device") as client:
                await wait_ready(client)
                yield client
    finally:
        for suffix in ("telemetry", "control"):
            forget_session(settings.mqtt, f"{settings.device.mqtt_client_id}-{suffix}")
