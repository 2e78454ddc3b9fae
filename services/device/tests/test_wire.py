"""MQTT 5 packet decoding of the ingest subscriber: the one-pass PUBLISH decoder agrees with the generic
split + decode_publish on every packet shape and on every cut of a stream (partial packets wait)."""

from __future__ import annotations

import random

from nattery_device.mqtt import wire


def _publish(topic: bytes, payload: bytes, *, mid: int | None, props: bytes = b"") -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    flags = 0x30
    if mid is not None:
        body += mid.to_bytes(2, "big")
        flags = 0x32
    body += wire.varint(len(props)) + props + payload
    return bytes([flags]) + wire.varint(len(body)) + body


def _stream() -> bytes:
    rng = random.Random(3)
    parts = []
    for i in range(300):
        topic = f"nattery/v1/site-{i:05d}/inv1/telemetry".encode()
        payload = b'{"ts":"2026-01-01T00:00:00+00:00","seq":%d,"values":{"a":%d}}' % (i, i)
        parts.append(_publish(topic, payload * rng.randint(1, 30), mid=i % 65535 + 1))
    parts.append(_publish(b"x/" * 100, b"p" * 300, mid=None, props=b"\x01\x01"))  # QoS 0, properties
    parts.append(_publish(b"t", b"q" * 20_000, mid=7, props=b"\x23" * 200))  # 3-byte length, long props
    parts.append(b"\x90\x04\x00\x01\x00\x01")  # SUBACK
    parts.append(b"\xd0\x00")  # PINGRESP
    parts.append(_publish(b"nattery/v1/s/d/telemetry", b"", mid=65535))  # empty payload
    return b"".join(parts)


def test_split_publishes_matches_split_and_decode_publish() -> None:
    data = _stream()
    publishes, others, used = wire.split_publishes(bytearray(data))
    packets, used_generic = wire.split(bytearray(data))
    assert used == used_generic == len(data)
    assert publishes == [wire.decode_publish(f, b) for k, f, b in packets if k == wire.PUBLISH]
    assert others == [(k, f, b) for k, f, b in packets if k != wire.PUBLISH]
    assert publishes[300] == ("x/" * 100, 0, b"p" * 300)
    assert publishes[-1] == ("nattery/v1/s/d/telemetry", 65535, b"")
    assert [kind for kind, _, _ in others] == [wire.SUBACK, 13]


def test_split_publishes_stops_at_a_partial_packet() -> None:
    data = _stream()
    for cut in [*random.Random(1).sample(range(len(data)), 300), 1, 2, 3]:
        publishes, others, used = wire.split_publishes(bytearray(data[:cut]))
        packets, used_generic = wire.split(bytearray(data[:cut]))
        assert used == used_generic <= cut
        assert len(publishes) + len(others) == len(packets)
