"""Bridge configuration from environment variables (Balena device/fleet variables).

Every variable starts with ``NATTERY_BRIDGE_``; nested sections use ``__``, e.g.
``NATTERY_BRIDGE_MQTT__HOST``, ``NATTERY_BRIDGE_LIMITS__MAX_CHARGE_W``. See the package README for the
full list and their defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nattery_contracts.mqtt import SLUG_PATTERN, SafetyLimits

from .lifetime import CONTROL_LIFETIME_CEILING_S, SCHEDULE_LIFETIME_CEILING_S


class SerialSettings(BaseModel):
    port: str = "/dev/ttyUSB0"
    baudrate: int = Field(default=9600, gt=0)
    bytesize: int = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = Field(default=1, ge=1, le=2)
    unit: int = Field(default=1, ge=1, le=247)
    # Expected device turnaround (end of request to start of reply). Deye: 25-40 ms (modbus-rtu.md §3).
    turnaround_ms: float = Field(default=50.0, ge=0)
    # Extra slack on top of wire time + turnaround before a reply counts as lost (USB latency timer 16 ms,
    # scheduler jitter on a loaded Pi).
    timeout_margin_ms: float = Field(default=100.0, ge=0)
    # A reply that has started may arrive in pieces this far apart (FTDI latency timer: 16 ms).
    chunk_gap_ms: float = Field(default=50.0, ge=1)
    # Silence after every transaction, learned per device (pacing.py): it starts at this floor and
    # backs off (doubling, up to pacing_max_ms) only when a request sent right after a reply times out
    # or collides. None = t3.5, the minimum the spec allows (3.65 ms at 9600 8N1); a value below t3.5
    # is raised to it. Peers use a fixed 50 ms (sunsynk, cFos) to 100 ms (mbusd), modbus-rtu.md §6.2.
    pacing_ms: float | None = Field(default=None, ge=0)
    pacing_max_ms: float = Field(default=100.0, gt=0)
    # How long a pause that failed is remembered (the pacing does not creep back below it meanwhile).
    pacing_memory_s: float = Field(default=3600.0, gt=0)
    retries: int = Field(default=1, ge=0, le=1)
    max_read_registers: int = Field(default=96, ge=1, le=125)
    # A hole of up to this many registers is read through instead of starting a new transaction: every
    # transaction costs ~64 ms of fixed overhead (request, t3.5, turnaround, pacing), ~30 registers'
    # worth of reply at 9600 baud.
    max_gap_registers: int = Field(default=24, ge=0)
    stale_after_s: float = Field(default=30.0, gt=0)
    stale_probe_interval_s: float = Field(default=30.0, gt=0)
    reopen_interval_s: float = Field(default=1.0, gt=0)


class MqttLinkSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 1884
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive_s: int = Field(default=30, ge=2)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    publish_window: int = Field(default=20, ge=1, le=200)


class DiscoverySettings(BaseModel):
    enabled: bool = True
    # Configs go to ``{prefix}/sensor/{site slug}/{device}_{value}/config``; the project broker's ACL
    # grants each site ``homeassistant/+/{its slug}/#`` and read on ``homeassistant/status``.
    prefix: str = "homeassistant"


class TelemetrySettings(BaseModel):
    fast_interval_s: float = Field(default=5.0, ge=0)
    slow_interval_s: float = Field(default=60.0, ge=0)


class LimitsSettings(BaseModel):
    """The installation's hard safety envelope (battery, inverter and grid connection), set by the
    installer as device variables; each field can be set on its own (``NATTERY_BRIDGE_LIMITS__*``)."""

    soc_min_pct: float = 10
    soc_max_pct: float = 100
    max_charge_w: float = 5000
    max_discharge_w: float = 5000
    battery_temp_min_c: float = 0
    battery_temp_max_c: float = 50
    export_limit_w: float = 3680

    def safety(self) -> SafetyLimits:
        return SafetyLimits(**self.model_dump())


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NATTERY_BRIDGE_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    site: str = Field(default="dev-site", pattern=SLUG_PATTERN)
    device: str = Field(default="inverter-1", pattern=SLUG_PATTERN)
    profile: str = "deye-sunsynk-1ph"
    firmware: str = "nattery-bridge/0.1.0"
    data_dir: Path = Path("/data")
    log_level: str = "INFO"

    serial: SerialSettings = SerialSettings()
    mqtt: MqttLinkSettings = MqttLinkSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    # Hard envelope of this installation (battery and grid connection). Commands are refused or clamped
    # against the *operating* limits, which start as these and may be narrowed (never widened) by an
    # admin ``set_limits`` command; those are persisted in the local database.
    limits: LimitsSettings = LimitsSettings()
    nominal_battery_voltage_v: float = Field(default=51.2, gt=0)

    link_grace_s: float = Field(default=300.0, gt=0)
    # Longest a control lives at the bridge, from its receipt (lifetime.py): a longer expires_at /
    # valid_until is clamped and the ack says so. Configurable down, never up.
    max_control_lifetime_s: float = Field(
        default=CONTROL_LIFETIME_CEILING_S, gt=0, le=CONTROL_LIFETIME_CEILING_S
    )
    max_schedule_lifetime_s: float = Field(
        default=SCHEDULE_LIFETIME_CEILING_S, gt=0, le=SCHEDULE_LIFETIME_CEILING_S
    )
    # Readings the envelope relies on (SOC, battery temperature, grid power) older than this refuse
    # every moving mode (freshness.py). Default: six fast polls.
    readings_max_age_s: float = Field(default=30.0, gt=0)
    # Temperature guard (temperature_guard.py): outside the window the battery holds, latched, until
    # the temperature has been inside the window narrowed by the hysteresis for release_after_s.
    temperature_hysteresis_c: float = Field(default=3.0, ge=0)
    temperature_release_after_s: float = Field(default=300.0, ge=0)
    control_check_interval_s: float = Field(default=1.0, gt=0)
    # How often the registers last written are read back to catch settings that revert on their own.
    drift_check_interval_s: float = Field(default=60.0, gt=0)
    outbox_budget_bytes: int = Field(default=50_000_000, ge=10_000)
    watchdog_timeout_s: float = Field(default=30.0, gt=0)
    # A stop must not hang: after this long the process exits anyway (balena kills after 10 s).
    shutdown_timeout_s: float = Field(default=4.0, gt=0)
    metrics_port: int = Field(default=9108, ge=0, le=65535)  # 0 disables the endpoint
    seen_commands_keep_days: float = Field(default=7.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BridgeSettings:
        self.limits.safety()  # raises if inconsistent (soc_min >= soc_max, ...)
        if self.telemetry.slow_interval_s and self.telemetry.slow_interval_s < self.telemetry.fast_interval_s:
            raise ValueError("telemetry.slow_interval_s must not be below telemetry.fast_interval_s")
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "bridge.sqlite3"
