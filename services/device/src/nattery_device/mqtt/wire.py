"""The MQTT 5 packet codec moved to the service kit: :mod:`nattery_shared.mqtt5.wire` (issue 10).

This name stays only for what still imports it from here (``mqtt/subscriber.py``, ``tests/test_wire.py``);
import the kit's module instead.
"""

from __future__ import annotations

from nattery_shared.mqtt5.wire import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_NORMAL,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    Packet,
    ProtocolError,
    Publish,
    connect,
    decode_connack,
    decode_publish,
    decode_suback,
    pubacks,
    publish,
    split,
    split_publishes,
    subscribe,
    varint,
)

__all__ = [
    "CONNACK",
    "DISCONNECT",
    "DISCONNECT_NORMAL",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "Packet",
    "ProtocolError",
    "Publish",
    "connect",
    "decode_connack",
    "decode_publish",
    "decode_suback",
    "pubacks",
    "publish",
    "split",
    "split_publishes",
    "subscribe",
    "varint",
]
