"""Settings of the device service (``NATTERY_`` prefix; its own section is ``NATTERY_DEVICE__*``)."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from nattery_shared.settings import ServiceSettings


def _default_client_id() -> str:
    # Stable per host: the ingest session (and the messages the broker keeps for it) survives restarts.
    return f"device-service-{socket.gethostname()}"[:60]


class DeviceSection(BaseModel):
    """Options only the device service reads."""

    # Mosquitto password file and pid file (site credentials are added, then the broker is SIGHUPed).
    mosquitto_password_file: Path = Path("var/mosquitto/passwd")
    mosquitto_pid_file: Path | None = Path("var/mosquitto/mosquitto.pid")
    mosquitto_hash_iterations: int = Field(default=101, ge=1)  # mosquitto_passwd's default for $7$
    # PostgreSQL holds each site's hash; the password file is reconciled with it this often.
    credentials_sync_s: float = Field(default=30.0, gt=0)

    # Ingest: shared-subscription group and this replica's fixed MQTT client id (persistent session).
    ingest_enabled: bool = True
    mqtt_share_group: str = Field(default="device-service", pattern=r"^[A-Za-z0-9_-]+$")
    mqtt_client_id: str = Field(default_factory=_default_client_id, max_length=60)
    # Unacknowledged QoS1 messages the broker may have in flight to us (MQTT5 Receive Maximum): this is
    # the bound on the ingest buffer; the rest waits in the broker's queue for our session.
    ingest_receive_maximum: int = Field(default=20_000, ge=10, le=65_535)
    ingest_max_concurrent_writes: int = Field(default=2, ge=1, le=16)
    # Batches: flushed at this many lines or this long after the first line, whichever comes first.
    # InfluxDB 1.x pays per request as well as per line: at 10,000 msg/s, 2,000-line batches every
    # 0.2 s cost influxd ~105 % of a core, 5,000 every 0.5 s ~75 %, 10,000 every 1 s ~70 %; 5,000 /
    # 0.5 s keeps publish -> queryable p99 under 2 s (services/device/README.md, "Benchmarks").
    ingest_batch_size: int = Field(default=5000, ge=1, le=50_000)
    ingest_flush_interval_s: float = Field(default=0.5, gt=0)
    ingest_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    ingest_retry_max_delay_s: float = Field(default=10.0, gt=0)
    rejected_keep: int = Field(default=1000, ge=1, description="invalid messages kept per list in Redis")
    registry_refresh_s: float = Field(default=30.0, gt=0)

    # Presence. Latest values in Redis are refreshed at most this often per device (and group of fields).
    latest_every_s: float = Field(default=1.0, ge=0)
    stale_after_s: float = Field(default=120.0, gt=0)
    # published outbox rows and consumed event ids are deleted after this long
    outbox_keep_days: float = Field(default=7.0, gt=0)
    presence_sweep_interval_s: float = Field(default=10.0, gt=0)
    # Each site's measured state (SOC, mean powers) is published as site.state_measured this often.
    site_state_interval_s: float = Field(default=60.0, ge=1, le=3600)

    # Commands.
    command_default_ttl_s: int = Field(default=300, ge=5, le=7 * 24 * 3600)
    command_sweep_interval_s: float = Field(default=5.0, gt=0)
    command_resend_after_s: float = Field(default=30.0, gt=0)

    # Live stream.
    stream_client_queue: int = Field(default=500, ge=1)
    stream_auth_timeout_s: float = Field(default=10.0, gt=0)


class DeviceSettings(ServiceSettings):
    service_name: str = "device"
    port: int = 3001
    device: DeviceSection = DeviceSection()


@lru_cache(maxsize=1)
def get_settings() -> DeviceSettings:
    return DeviceSettings()
