"""Nattery device service: app factory and lifespan (clients built once, handed to handlers as dependencies)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from nattery_contracts.aio import within
from nattery_device.alerts.endpoints import router as alerts_router
from nattery_device.alerts.evaluator import AlertEvaluator, AlertingEdgeEvents
from nattery_device.commands.consumers import AckConsumer, CommandConsumers
from nattery_device.commands.endpoints import router as commands_router
from nattery_device.commands.service import CommandService
from nattery_device.devices.endpoints import router as devices_router
from nattery_device.devices.registry import RegistryCache
from nattery_device.events.endpoints import router as events_router
from nattery_device.gateways.endpoints import router as gateways_router
from nattery_device.gateways.feed import GatewayFeed
from nattery_device.ingest.dead_letters import RejectedStore, Rejection
from nattery_device.ingest.edge_messages import EdgeMessageIngest
from nattery_device.ingest.endpoints import router as ingest_router
from nattery_device.ingest.telemetry import Sinks, TelemetryIngest
from nattery_device.ingest.writer import InfluxBatchWriter
from nattery_device.mqtt import subscriber
from nattery_device.mqtt.credentials import PasswordFile
from nattery_device.mqtt.publisher import MqttPublisher
from nattery_device.mqtt.subscriber import AckingSubscriber
from nattery_device.presence.service import PresenceService
from nattery_device.settings import DeviceSettings, get_settings
from nattery_device.site_state.service import SiteStateAggregator
from nattery_device.sites.endpoints import router as sites_router
from nattery_device.sites.service import CredentialsReconciler
from nattery_device.stream.endpoints import router as stream_router
from nattery_device.stream.hub import StreamHub, StreamPublisher
from nattery_device.telemetry.endpoints import router as telemetry_router
from nattery_device.telemetry.service import ensure_rollups
from nattery_shared.app import Readiness
from nattery_shared.app import create_app as create_service_app
from nattery_shared.outbox import OutboxRelay
from nattery_shared.resources import open_resources

SCHEMA = "device"
GC_THRESHOLDS = (10_000, 20, 50)  # Python's defaults: (700, 10, 10)
log = logging.getLogger(__name__)


def create_app(settings: DeviceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    cfg = settings.device

    @asynccontextmanager
    async def lifespan(_: FastAPI, readiness: Readiness) -> AsyncIterator[Mapping[str, Any]]:
        tasks: list[asyncio.Task[Any]] = []

        def spawn(name: str, coro: Coroutine[Any, Any, Any]) -> None:
            tasks.append(asyncio.create_task(coro, name=name))

        async with open_resources(
            settings, readiness, schema=SCHEMA, postgres=True, redis=True, rabbit=True, influx=True
        ) as res:
            assert res.pool and res.redis and res.bus and res.influx
            # The one-minute history rollup (telemetry/service.py) is in place before points land.
            await ensure_rollups(res.influx)
            registry = RegistryCache(res.pool, refresh_s=cfg.registry_refresh_s)
            try:
                await registry.load()
            except Exception as err:  # PostgreSQL down at start: /readyz says so; the refresh loop retries
                log.warning("registry not loaded at start: %r", err)
            passwords = PasswordFile(
                cfg.mosquitto_password_file,
                pid_file=cfg.mosquitto_pid_file,
                iterations=cfg.mosquitto_hash_iterations,
            )
            reconciler = CredentialsReconciler(res.pool, passwords, interval_s=cfg.credentials_sync_s)
            stream_publisher = StreamPublisher(res.redis)
            hub = StreamHub(res.redis, client_queue=cfg.stream_client_queue)
            await hub.start()
            relay = OutboxRelay(res.pool, res.bus, keep_days=cfg.outbox_keep_days)
            publisher = MqttPublisher(
                settings.mqtt, client_id=f"{cfg.mqtt_client_id}-cmd-{uuid.uuid4().hex[:6]}"
            )
            commands = CommandService(
                res.pool,
                publisher,
                relay=relay,
                default_ttl_s=cfg.command_default_ttl_s,
                resend_after_s=cfg.command_resend_after_s,
            )
            presence = PresenceService(
                res.pool,
                res.redis,
                registry,
                stream_publisher,
                relay=relay,
                stale_after_s=cfg.stale_after_s,
                latest_every_s=cfg.latest_every_s,
                on_online=commands.redeliver,
            )
            with contextlib.suppress(Exception):
                await presence.load()
            rejected = RejectedStore(res.redis, keep=cfg.rejected_keep)
            # Alert rules: evaluated on ingest (a telemetry sink, edge fault events) and by a periodic
            # offline check (alerts/evaluator.py).
            alerts = AlertEvaluator(res.pool, res.redis, relay=relay)
            with contextlib.suppress(Exception):
                await alerts.load_rules()
            await CommandConsumers(res.pool, commands).register(res.bus)

            spawn("registry-refresh", registry.run())
            spawn("credentials-reconcile", reconciler.run())
            spawn("outbox-relay", relay.run())
            spawn("mqtt-publisher", publisher.run())
            spawn("command-sweeper", commands.run_sweeper(cfg.command_sweep_interval_s))
            spawn("presence-sweeper", presence.run_sweeper(cfg.presence_sweep_interval_s))
            spawn("presence-latest", presence.run_latest_flusher())
            spawn("alerts", alerts.run())

            subscribers: list[AckingSubscriber] = []
            writer: InfluxBatchWriter | None = None
            gateway_feed = GatewayFeed()  # POST /ingest feeds the telemetry pipeline below
            if cfg.ingest_enabled:
                group = cfg.mqtt_share_group
                telemetry_sub = AckingSubscriber(
                    settings.mqtt,
                    client_id=f"{cfg.mqtt_client_id}-telemetry",
                    filters=[f"$share/{group}/nattery/v1/+/+/telemetry"],
                    receive_maximum=cfg.ingest_receive_maximum,
                    session_expiry_s=cfg.ingest_session_expiry_s,
                    name="mqtt-telemetry",
                    logger=subscriber.log,
                )
                control_sub = AckingSubscriber(
                    settings.mqtt,
                    client_id=f"{cfg.mqtt_client_id}-control",
                    filters=[f"$share/{group}/nattery/v1/+/+/{s}" for s in ("state", "event", "command/ack")],
                    receive_maximum=1000,
                    session_expiry_s=cfg.ingest_session_expiry_s,
                    name="mqtt-control",
                    logger=subscriber.log,
                )
                subscribers = [telemetry_sub, control_sub]

                def refused(lines: Any, error: str) -> None:
                    batch = [
                        Rejection("influxdb/write", "write_refused", error, line.encode())
                        for line in lines[:100]
                    ]
                    spawn("keep-refused", rejected.keep(batch))

                writer = InfluxBatchWriter(
                    res.influx,
                    on_written=gateway_feed.acking(telemetry_sub.ack),
                    on_refused=refused,
                    batch_size=cfg.ingest_batch_size,
                    flush_interval_s=cfg.ingest_flush_interval_s,
                    max_concurrent=cfg.ingest_max_concurrent_writes,
                    retry_max_delay_s=cfg.ingest_retry_max_delay_s,
                )
                site_states = SiteStateAggregator(res.redis, res.bus, interval_s=cfg.site_state_interval_s)
                sinks = Sinks(presence, site_states, alerts)
                ingest = TelemetryIngest(
                    telemetry_sub, registry, writer, rejected, sinks, batch_size=cfg.ingest_batch_size
                )
                gateway_feed.attach(writer, sinks)
                edge_messages = EdgeMessageIngest(
                    control_sub,
                    registry,
                    rejected,
                    presence,
                    AckConsumer(commands),
                    AlertingEdgeEvents(res.pool, stream_publisher, alerts),
                )
                for sub in subscribers:
                    sub.start()

                spawn("influx-writer", writer.run())
                spawn("telemetry-ingest", ingest.run())
                spawn("edge-messages-ingest", edge_messages.run())
                spawn("site-states", site_states.run())

            async def mqtt_ready() -> None:
                # Ready means commands can be published and every subscription was granted (SUBACK):
                # a site's first acknowledgement must not be published into a group not yet there.
                if not publisher.connected.is_set():
                    raise ConnectionError("command publisher not connected to the MQTT broker")
                if not all(s.connected.is_set() for s in subscribers):
                    raise ConnectionError("ingest not subscribed at the MQTT broker")

            readiness.add("mqtt", mqtt_ready)

            # Garbage collection on the ingest path: every message allocates a few tracked objects
            # (delivery tuple, model, values dict), so the default gen0 threshold (700) ran a
            # collection every ~100 messages, each scanning what survives. Objects alive after startup
            # (modules, models, pools) are frozen out of the scans and collections run less often;
            # reference counting still frees everything at once, only cycles wait longer.
            gc_thresholds = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            try:
                yield {
                    **res.as_state(),
                    "passwords": passwords,
                    "registry": registry,
                    "commands": commands,
                    "relay": relay,
                    "stream_hub": hub,
                    "rejected": rejected,
                    "gateway_feed": gateway_feed,
                    "alerts": alerts,
                }
            finally:
                ingest_tasks = {"telemetry-ingest", "edge-messages-ingest"}
                for task in tasks:
                    if task.get_name() in ingest_tasks:
                        task.cancel()
                if writer is not None:
                    await writer.drain(timeout_s=5.0)  # store and ack what we hold; the rest is redelivered
                with contextlib.suppress(Exception):
                    await within(presence.flush_latest(), 2.0)
                gc.unfreeze()
                gc.set_threshold(*gc_thresholds)
                for task in tasks:
                    task.cancel()
                stuck: set[asyncio.Task[Any]] = set()
                if tasks:
                    _done, stuck = await asyncio.wait(tasks, timeout=10)
                for task in stuck:
                    log.error("task %s did not stop within 10 s", task.get_name())
                for sub in subscribers:
                    await sub.close()  # the persistent session stays at the broker
                await hub.close()

    return create_service_app(
        settings=settings,
        title="Nattery device service",
        description="Fleet registry, telemetry ingest, command path and live stream.",
        lifespan=lifespan,
        routers=[
            sites_router,
            devices_router,
            telemetry_router,
            ingest_router,
            gateways_router,
            events_router,
            commands_router,
            stream_router,
            alerts_router,
        ],
    )
