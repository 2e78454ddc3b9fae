"""CloudEvents 1.0 envelope and the ``data`` model of every event type (ARCHITECTURE §5).

The event ``type`` doubles as the RabbitMQ routing key on the ``nattery.events`` topic exchange.
Add a type here (and in docs/events.md) before publishing it anywhere.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from nattery_contracts.mqtt import AckStatus, DeviceStatus, ScheduleSlot


class EventType(StrEnum):
    DEVICE_REGISTERED = "device.registered"
    DEVICE_STATUS_CHANGED = "device.status_changed"
    DEVICE_COMMAND_ACKNOWLEDGED = "device.command_acknowledged"
    SITE_STATE_MEASURED = "site.state_measured"
    ALERT_RAISED = "alert.raised"
    ALERT_RESOLVED = "alert.resolved"
    MARKET_PRICES_UPDATED = "market.prices_updated"
    DISPATCH_RECEIVED = "dispatch.received"
    DISPATCH_STATUS_CHANGED = "dispatch.status_changed"
    NIV_UPDATED = "niv.updated"
    WEATHER_FORECAST_UPDATED = "weather.forecast_updated"
    FORECAST_UPDATED = "forecast.updated"
    SCHEDULE_PUBLISHED = "schedule.published"
    COMMAND_REQUESTED = "command.requested"
    AUDIT_RECORDED = "audit.recorded"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceRegistered(_Data):
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    site_slug: str
    device_slug: str
    kind: str
    profile: str | None = None


class DeviceStatusChanged(_Data):
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    previous: DeviceStatus | None
    status: DeviceStatus
    reason: str
    at: AwareDatetime


class CommandState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


class DeviceCommandAcknowledged(_Data):
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    command_id: uuid.UUID
    command_type: str
    state: CommandState
    edge_status: AckStatus | None = None
    reason: str | None = None
    applied: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime


class SiteStateMeasured(_Data):
    """A site's measured state over one interval (``window_start``..``window_end``), from the telemetry
    device-service ingested: at most one event per site per interval. Powers are the means over the
    window of each device's samples, summed over the site's devices (signs as in ARCHITECTURE §3);
    ``soc_pct`` is the newest reading (the mean over the site's batteries), taken at ``measured_at``.
    A value is None when no device of the site reported it in the window."""

    org_id: uuid.UUID
    site_id: uuid.UUID
    measured_at: AwareDatetime = Field(description="time of the newest sample in the window")
    window_start: AwareDatetime
    window_end: AwareDatetime
    soc_pct: float | None = Field(default=None, ge=0, le=100)
    battery_power_w: float | None = Field(default=None, description="> 0 discharging, < 0 charging")
    load_power_w: float | None = None
    pv_power_w: float | None = None
    grid_power_w: float | None = Field(default=None, description="> 0 import, < 0 export")
    samples: int = Field(ge=1)
    devices: int = Field(ge=1)


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertRaised(_Data):
    """An alert opened by a rule for a device (device-service, services/device/README.md "Alerts").
    ``code``: the rule's kind (``offline``, ``fault``) or kind and field (``threshold:battery_soc_pct``);
    ``value``: the reading that raised it, when there is one."""

    alert_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID | None = None
    rule_id: uuid.UUID | None = None
    severity: AlertSeverity
    code: str
    message: str
    value: float | None = None
    at: AwareDatetime


class AlertResolved(_Data):
    """An alert closed: ``resolution`` ``cleared`` (its condition went away), ``manual`` (by
    ``resolved_by``), ``rule_changed`` or ``rule_deleted``."""

    alert_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID | None = None
    rule_id: uuid.UUID | None = None
    resolution: str | None = None
    resolved_by: str | None = None
    at: AwareDatetime


class PricePoint(_Data):
    start: AwareDatetime
    end: AwareDatetime
    price_p_per_kwh: float = Field(
        description="price per kWh in the minor unit of the event's currency (pence for GBP, cents for EUR)"
    )
    price: float | None = Field(
        default=None, description="the provider's own figure, in the event's currency and unit (e.g. EUR/MWh)"
    )


class MarketPricesUpdated(_Data):
    """Prices for a market/region; ``direction`` import or export.

    ``price_p_per_kwh`` of every point is in the minor unit of ``currency`` per kWh (GBP → pence, EUR →
    cents); ``unit`` names the unit of each point's optional ``price`` (the provider's own figure).
    Events without ``currency``/``unit`` mean GBP pence per kWh, as before."""

    market: str = Field(description="e.g. octopus-agile")
    region: str | None = None
    direction: str = Field(pattern="^(import|export)$")
    prices: list[PricePoint] = Field(min_length=1)
    published_at: AwareDatetime
    currency: str = Field(default="GBP", pattern="^[A-Z]{3}$", description="ISO 4217")
    unit: str = Field(default="p/kWh", max_length=20, description="unit of each point's price, e.g. EUR/MWh")
    version: int | None = Field(default=None, ge=1, description="the publisher's version of this price set")


class DispatchReceived(_Data):
    """A flexibility-market instruction (Axle-style): hold this power over [start, end)."""

    dispatch_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    provider: str
    battery_power_w: float = Field(description="+ discharge / export, - charge / import")
    start: AwareDatetime
    end: AwareDatetime


class DispatchStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXECUTED = "executed"


class DispatchStatusChanged(_Data):
    dispatch_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    status: DispatchStatus
    reason: str | None = None
    at: AwareDatetime


class NivUpdated(_Data):
    settlement_date: str
    settlement_period: int = Field(ge=1, le=50)
    niv_mwh: float
    system_sell_price_gbp_per_mwh: float | None = None
    system_buy_price_gbp_per_mwh: float | None = None
    source: str | None = Field(default=None, description="elexon | modo")
    start: AwareDatetime | None = Field(
        default=None, description="the period's start (UTC), when the source says"
    )


class WeatherPoint(_Data):
    ts: AwareDatetime
    temperature_c: float | None = None
    cloud_cover_pct: float | None = None
    irradiance_w_per_m2: float | None = Field(default=None, description="GHI, global horizontal")
    dni_w_per_m2: float | None = Field(default=None, description="direct normal irradiance")
    dhi_w_per_m2: float | None = Field(default=None, description="diffuse horizontal irradiance")
    wind_speed_m_per_s: float | None = None


class WeatherForecastUpdated(_Data):
    """Irradiance and weather per hour; each point's values are the mean of the hour ending at ``ts``
    (Open-Meteo's convention), temperature and wind instantaneous at ``ts``."""

    site_id: uuid.UUID
    provider: str
    points: list[WeatherPoint] = Field(min_length=1)
    org_id: uuid.UUID | None = None


class ForecastPoint(_Data):
    start: AwareDatetime
    end: AwareDatetime
    load_kw: float | None = Field(
        default=None, ge=0, description="absent: this forecast says nothing of load"
    )
    pv_kw: float | None = Field(
        default=None, ge=0, description="absent: this forecast says nothing of PV (a load-only forecast)"
    )


class ForecastUpdated(_Data):
    org_id: uuid.UUID
    site_id: uuid.UUID
    model: str
    points: list[ForecastPoint] = Field(min_length=1)


class SchedulePublished(_Data):
    schedule_id: uuid.UUID
    version: int = Field(ge=1)
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID | None = None
    slots: list[ScheduleSlot] = Field(min_length=1)
    valid_until: AwareDatetime


class CommandRequested(_Data):
    command_id: uuid.UUID
    org_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID | None = None
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    expires_at: AwareDatetime
    requested_by: str


class AuditRecorded(_Data):
    org_id: uuid.UUID | None
    actor: str
    action: str
    target: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    at: AwareDatetime


EVENT_DATA: dict[EventType, type[_Data]] = {
    EventType.DEVICE_REGISTERED: DeviceRegistered,
    EventType.DEVICE_STATUS_CHANGED: DeviceStatusChanged,
    EventType.DEVICE_COMMAND_ACKNOWLEDGED: DeviceCommandAcknowledged,
    EventType.SITE_STATE_MEASURED: SiteStateMeasured,
    EventType.ALERT_RAISED: AlertRaised,
    EventType.ALERT_RESOLVED: AlertResolved,
    EventType.MARKET_PRICES_UPDATED: MarketPricesUpdated,
    EventType.DISPATCH_RECEIVED: DispatchReceived,
    EventType.DISPATCH_STATUS_CHANGED: DispatchStatusChanged,
    EventType.NIV_UPDATED: NivUpdated,
    EventType.WEATHER_FORECAST_UPDATED: WeatherForecastUpdated,
    EventType.FORECAST_UPDATED: ForecastUpdated,
    EventType.SCHEDULE_PUBLISHED: SchedulePublished,
    EventType.COMMAND_REQUESTED: CommandRequested,
    EventType.AUDIT_RECORDED: AuditRecorded,
}

D = TypeVar("D")


class CloudEvent(BaseModel, Generic[D]):
    """CloudEvents 1.0 structured-mode JSON envelope."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str = Field(min_length=1, description="e.g. /services/trading")
    type: EventType
    time: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    datacontenttype: str = "application/json"
    subject: str | None = None
    requestid: str | None = Field(default=None, description="extension: request id carried across services")
    data: D


def make_event(
    event_type: EventType,
    data: _Data,
    *,
    source: str,
    subject: str | None = None,
    request_id: str | None = None,
) -> CloudEvent[Any]:
    """Build an envelope, checking that ``data`` is the model registered for ``event_type``."""
    expected = EVENT_DATA[event_type]
    if not isinstance(data, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(data).__name__}")
    return CloudEvent[Any](type=event_type, source=source, subject=subject, requestid=request_id, data=data)


def parse_event(raw: bytes | str) -> CloudEvent[Any]:
    """Parse an envelope and validate its ``data`` against the model of its ``type``.

    Raises pydantic.ValidationError (or ValueError) for anything malformed; consumers dead-letter it.
    """
    envelope = CloudEvent[dict[str, Any]].model_validate_json(raw)
    data = EVENT_DATA[envelope.type].model_validate(envelope.data)
    return CloudEvent[Any](**{**envelope.model_dump(exclude={"data"}), "data": data})
