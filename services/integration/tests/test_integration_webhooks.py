"""Inbound webhooks: Standard Webhooks signatures checked on the raw body before anything else, replays
acknowledged and ignored, oversize refused, and a delivery stored before the 200 is processed once
even when the service stops between storing and processing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from integration_test_helpers import TEST_WEBHOOK_SECRET, integration_settings
from pydantic import SecretStr

from nattery_integration.app import create_app
from nattery_integration.areas import Area
from nattery_integration.settings import IntegrationSettings, WebhookSettings
from nattery_integration.webhooks.batcher import StoreUnavailable
from nattery_integration.webhooks.registry import WebhookDelivery
from nattery_integration.webhooks.signature import secret_key, sign, verify
from nattery_shared.testing import TEST_PG_DSN, TestIssuer, eventually

KEY = secret_key(TEST_WEBHOOK_SECRET)


def test_the_standard_webhooks_test_vector() -> None:
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(KEY, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body) == expected
    assert verify(KEY, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, f"v1a,xyz {expected}")
    assert not verify(KEY, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, expected)


def signed(
    body: bytes, *, delivery_id: str | None = None, ts: int | None = None, key: bytes = KEY
) -> dict[str, str]:
    delivery_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(ts if ts is not None else int(time.time()))
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        "webhook-signature": sign(key, delivery_id, stamp, body),
        "content-type": "application/json",
    }


class Recorder:
    def __init__(self) -> None:
        self.handled: list[WebhookDelivery] = []

    async def __call__(self, delivery: WebhookDelivery) -> None:
        delivery.json()  # the handler parses; the endpoint never did
        self.handled.append(delivery)

    def area(self) -> Area:
        return Area(name="test-webhooks", webhook_handlers=lambda ctx: {"test": self})


@asynccontextmanager
async def running(settings: IntegrationSettings, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, areas=[recorder.area()], discover_areas=False)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://integration") as client:
            yield client


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def api(settings: IntegrationSettings, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with running(settings, recorder) as client:
        yield client


async def status_of(delivery_id: str) -> str | None:
    async with await psycopg.AsyncConnection.connect(TEST_PG_DSN) as conn:
        cur = await conn.execute(
            "SELECT status FROM integration.webhook_deliveries WHERE provider = 'test' AND delivery_id = %s",
            (delivery_id,),
        )
        row = await cur.fetchone()
    return None if row is None else str(row[0])


async def test_a_valid_delivery_is_stored_then_processed(api: httpx.AsyncClient, recorder: Recorder) -> None:
    body = json.dumps({"type": "dispatch.created", "data": {"event_id": 7}}).encode()
    headers = signed(body)
    response = await api.post("/webhooks/test", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted", "delivery_id": headers["webhook-id"]}
    assert await status_of(headers["webhook-id"]) in ("pending", "processed")  # stored before the answer
    await eventually(lambda: len(recorder.handled) == 1)
    assert recorder.handled[0].body == body
    await eventually(lambda: status_of(headers["webhook-id"]), timeout_s=5)
    assert await eventually(lambda: _is(headers["webhook-id"], "processed"))


async def _is(delivery_id: str, status: str) -> bool:
    return await status_of(delivery_id) == status


async def test_a_replayed_delivery_is_acknowledged_and_ignored(
    api: httpx.AsyncClient, recorder: Recorder
) -> None:
    body = b'{"type": "x"}'
    headers = signed(body)
    assert (await api.post("/webhooks/test", content=body, headers=headers)).json()["status"] == "accepted"
    await eventually(lambda: len(recorder.handled) == 1)
    later = signed(body, delivery_id=headers["webhook-id"])  # the provider's retry: same id, new timestamp
    replay = await api.post("/webhooks/test", content=body, headers=later)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    again = await api.post("/webhooks/test", content=body, headers=headers)  # or the very same request
    assert again.json()["status"] == "duplicate"
    await eventually(lambda: _is(headers["webhook-id"], "processed"))
    assert len(recorder.handled) == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("wrong_secret", 401),
        ("tampered_body", 401),
        ("no_signature", 401),
        ("stale", 400),
        ("future", 400),
        ("no_id", 400),
    ],
)
async def test_bad_deliveries_are_refused_before_anything_is_stored(
    api: httpx.AsyncClient, recorder: Recorder, change: str, status: int
) -> None:
    body = b'{"type": "x"}'
    headers = signed(body)
    send = body
    if change == "wrong_secret":
        headers = signed(body, key=b"another-secret-of-32-bytes-long!")
    elif change == "tampered_body":
        send = b'{"type": "y"}'
    elif change == "no_signature":
        del headers["webhook-signature"]
    elif change == "stale":  # 30 s past the 300 s window: whole seconds and the request's own time
        headers = signed(body, ts=int(time.time()) - 330)
    elif change == "future":
        headers = signed(body, ts=int(time.time()) + 330)
    elif change == "no_id":
        del headers["webhook-id"]
    response = await api.post("/webhooks/test", content=send, headers=headers)
    assert response.status_code == status, response.text
    if "webhook-id" in headers:
        assert await status_of(headers["webhook-id"]) is None
    assert recorder.handled == []


async def test_an_oversized_body_is_refused(settings: IntegrationSettings, recorder: Recorder) -> None:
    settings.integration.webhooks = WebhookSettings(
        secrets={"test": SecretStr(TEST_WEBHOOK_SECRET)}, max_body_bytes=2048, worker_poll_s=0.05
    )
    async with running(settings, recorder) as api:
        body = b'{"pad": "' + b"x" * 2100 + b'"}'
        headers = signed(body)
        response = await api.post("/webhooks/test", content=body, headers=headers)
        assert response.status_code == 413, response.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
            for _ in range(3):
                yield b"y" * 1000

        streamed = dict(signed(b"y" * 3000))
        response = await api.post("/webhooks/test", content=chunks(), headers=streamed)
        assert response.status_code == 413, response.text
        assert await status_of(headers["webhook-id"]) is None
        small = b'{"ok": true}'
        assert (await api.post("/webhooks/test", content=small, headers=signed(small))).status_code == 200


async def test_an_unknown_provider_is_404(api: httpx.AsyncClient) -> None:
    body = b"{}"
    assert (await api.post("/webhooks/nosuch", content=body, headers=signed(body))).status_code == 404


async def test_a_delivery_stored_before_a_crash_is_processed_once_after_restart(
    test_issuer: TestIssuer,
) -> None:
    crashed = integration_settings(test_issuer)
    crashed.integration.webhooks.worker_enabled = False  # the process dies before its worker gets to it
    first = Recorder()
    body = b'{"type": "dispatch.created"}'
    headers = signed(body)
    async with running(crashed, first) as api:
        assert (await api.post("/webhooks/test", content=body, headers=headers)).status_code == 200
    assert first.handled == [] and await status_of(headers["webhook-id"]) == "pending"

    after = Recorder()
    async with running(integration_settings(test_issuer), after) as api:
        await eventually(lambda: _is(headers["webhook-id"], "processed"))
        # (other tests' stopped apps may have left deliveries pending too: only ours is looked at)
        assert [d.delivery_id for d in after.handled].count(headers["webhook-id"]) == 1
        # the provider retries the delivery it got no answer for... acknowledged, not processed again
        retry = signed(body, delivery_id=headers["webhook-id"])
        assert (await api.post("/webhooks/test", content=body, headers=retry)).json()["status"] == "duplicate"
    third = Recorder()
    async with running(integration_settings(test_issuer), third) as api:
        probe = b'{"type": "probe"}'
        probe_headers = signed(probe)
        await api.post("/webhooks/test", content=probe, headers=probe_headers)
        # the worker ran; the old delivery was not redone
        await eventually(lambda: probe_headers["webhook-id"] in [d.delivery_id for d in third.handled])
        assert headers["webhook-id"] not in [d.delivery_id for d in third.handled]
    assert [d.delivery_id for d in after.handled].count(headers["webhook-id"]) == 1


async def test_a_failing_handler_is_retried(test_issuer: TestIssuer) -> None:
    calls: list[int] = []

    async def flaky(delivery: WebhookDelivery) -> None:
        calls.append(delivery.attempts)
        if len(calls) == 1:
            raise RuntimeError("downstream not ready")

    settings = integration_settings(test_issuer)
    app = create_app(
        settings,
        areas=[Area(name="flaky", webhook_handlers=lambda ctx: {"test": flaky})],
        discover_areas=False,
    )
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        webhooks = manager._state["webhooks"]
        body = b"{}"
        headers = signed(body)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://i"
        ) as api:
            assert (await api.post("/webhooks/test", content=body, headers=headers)).status_code == 200
        await eventually(lambda: len(calls) == 1)
        async with await psycopg.AsyncConnection.connect(TEST_PG_DSN, autocommit=True) as conn:
            await conn.execute(  # skip the 5 s back-off
                "UPDATE integration.webhook_deliveries SET lease_until = now() WHERE delivery_id = %s",
                (headers["webhook-id"],),
            )
        webhooks.poke()
        await eventually(lambda: _is(headers["webhook-id"], "processed"))
        assert calls == [1, 2]


async def test_concurrent_deliveries_are_each_stored_before_their_200(
    api: httpx.AsyncClient, recorder: Recorder
) -> None:
    # Concurrent requests share INSERTs (webhooks/batcher.py); a provider's retry in the same burst is
    # the first one's replay.
    bodies = [json.dumps({"type": "burst", "n": n}).encode() for n in range(40)]
    headers = [signed(body) for body in bodies]
    retry = signed(bodies[0], delivery_id=headers[0]["webhook-id"])
    async with await psycopg.AsyncConnection.connect(TEST_PG_DSN, autocommit=True) as conn:
        lock = asyncio.Lock()

        async def post(body: bytes, head: dict[str, str]) -> str:
            response = await api.post("/webhooks/test", content=body, headers=head)
            assert response.status_code == 200, response.text
            async with lock:  # one connection for all: stored when its answer came, not later
                cur = await conn.execute(
                    "SELECT body FROM integration.webhook_deliveries WHERE provider = 'test' "
                    "AND delivery_id = %s",
                    (head["webhook-id"],),
                )
                row = await cur.fetchone()
            assert row is not None and bytes(row[0]) == body
            return str(response.json()["status"])

        statuses = await asyncio.gather(
            *(post(body, head) for body, head in zip(bodies, headers, strict=True)), post(bodies[0], retry)
        )
    assert statuses[1:-1] == ["accepted"] * 39
    assert sorted([statuses[0], statuses[-1]]) == ["accepted", "duplicate"]
    ours = {head["webhook-id"] for head in headers}
    await eventually(lambda: ours <= {d.delivery_id for d in recorder.handled})
    assert sorted(d.delivery_id for d in recorder.handled if d.delivery_id in ours) == sorted(ours)


async def test_a_batch_that_cannot_be_stored_fails_each_of_its_deliveries(
    settings: IntegrationSettings, recorder: Recorder
) -> None:
    app = create_app(settings, areas=[recorder.area()], discover_areas=False)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        webhooks = manager._state["webhooks"]
        now = datetime.now(UTC)
        good, bad = f"msg_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}\x00"  # PostgreSQL text has no NUL
        # both queued in the same turn of the event loop: one batch, one INSERT, which fails
        results = await asyncio.gather(
            webhooks.store("test", good, now, b"{}"),
            webhooks.store("test", bad, now, b"{}"),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [StoreUnavailable, StoreUnavailable]
        assert await status_of(good) is None  # not stored, so never answered 200 (503: the provider retries)
        # over HTTP such an id never gets that far (a 400); a batch after the failed one stores normally
        body = b"{}"
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://i"
        ) as api:
            response = await api.post("/webhooks/test", content=body, headers=signed(body, delivery_id=bad))
            assert response.status_code == 400, response.text
            response = await api.post("/webhooks/test", content=body, headers=signed(body, delivery_id=good))
            assert response.status_code == 200 and response.json()["status"] == "accepted"
            await eventually(lambda: good in [d.delivery_id for d in recorder.handled])
