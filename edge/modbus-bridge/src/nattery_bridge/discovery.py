"""Home Assistant MQTT discovery for the telemetry values (platform.md §9): one retained sensor config
per value, built from the register map's units. Published on connect and again when Home Assistant
announces itself on ``<prefix>/status``."""

from __future__ import annotations

import json
from typing import Any

from nattery_contracts.modbus.registers import Point, RegisterMap
from nattery_contracts.mqtt import TopicSuffix, topic

from .settings import BridgeSettings

# Home Assistant's sensor device and state class for each unit it knows; values of other units are not
# announced. A point's own ``device_class`` (a SOC in % is "battery") wins over the unit's.
HA_CLASSES_BY_UNIT: dict[str, tuple[str | None, str]] = {
    "%": (None, "measurement"),
    "kWh": ("energy", "total_increasing"),
    "W": ("power", "measurement"),
    "V": ("voltage", "measurement"),
    "A": ("current", "measurement"),
    "Hz": ("frequency", "measurement"),
    "°C": ("temperature", "measurement"),
}


def ha_classes(point: Point) -> tuple[str | None, str, str] | None:
    """(device_class, unit, state_class) of a point, or None if Home Assistant gets no sensor for it."""
    classes = HA_CLASSES_BY_UNIT.get(point.unit)
    if classes is None:
        return None
    device_class, state_class = classes
    return point.device_class or device_class, point.unit, state_class


def display_name(point: Point) -> str:
    """``battery_soc_pct`` -> "Battery soc": the name without its unit suffix, in words. (The SoC/PV
    replacements are undone by ``capitalize()``; kept, since Home Assistant has these names.)"""
    name = point.name.rsplit("_", 1)[0] if point.unit else point.name
    return name.replace("_", " ").replace("soc", "SoC").replace("pv", "PV").capitalize()


def discovery_messages(
    settings: BridgeSettings, rmap: RegisterMap, names: list[str]
) -> list[tuple[str, bytes]]:
    """Retained discovery configs (topic, payload) for the telemetry values ``names``."""
    site, device = settings.site, settings.device
    node = f"nattery_{site}_{device}".replace("-", "_")
    state_t = topic(site, device, TopicSuffix.TELEMETRY)
    avty_t = topic(site, device, TopicSuffix.STATE)
    dev = {
        "ids": [node],
        "name": f"Nattery {site} {device}",
        "mf": "Nattery",
        "mdl": settings.profile,
        "sw": settings.firmware,
    }
    out: list[tuple[str, bytes]] = []
    for name in names:
        point = rmap[name]
        classes = ha_classes(point)
        if classes is None:
            continue
        device_class, unit, state_class = classes
        cfg: dict[str, Any] = {
            "name": display_name(point),
            "uniq_id": f"{node}_{name}",
            "stat_t": state_t,
            # telemetry arrives in groups; keep the last value when a message lacks this one
            "val_tpl": f"{{{{ value_json['values'].get('{name}', this.state) }}}}",
            "unit_of_meas": unit,
            "stat_cla": state_class,
            "avty_t": avty_t,
            "avty_tpl": "{{ 'offline' if value_json.status == 'offline' else 'online' }}",
            "dev": dev,
        }
        if device_class:
            cfg["dev_cla"] = device_class
        # node_id = the site slug: the broker ACL grants a site `homeassistant/+/{slug}/#` only.
        object_id = f"{device}_{name}".replace("-", "_")
        out.append(
            (f"{settings.discovery.prefix}/sensor/{site}/{object_id}/config", json.dumps(cfg).encode())
        )
    return out
