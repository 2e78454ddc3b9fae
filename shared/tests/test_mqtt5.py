"""The kit's MQTT 5 codec and acknowledging subscriber: round trips, malformed packets from a broker, the
one-pass PUBLISH decoder against the generic one, and the real Mosquitto (127.0.0.1:1884): PUBACK only
after ack(), an unacknowledged message comes again after a reconnect, a wrong password is refused."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from nattery_shared.mqtt5 import wire
from nattery_shared.mqtt5.client import (
    AckingSubscriber,
    ConnectRefused,
    Delivery,
    forget_session_async,
    open_connection,
)
from nattery_shared.settings import MqttSettings
from nattery_shared.testing import TEST_MQTT_PORT, TcpProxy, eventually


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


# --- encode / decode ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])
def test_varint_round_trip_at_every_width(n: int) -> None:
    encoded = wire.varint(n)
    assert len(encoded) == 1 + (n >= 128) + (n >= 16_384) + (n >= 2_097_152)
    assert wire._read_varint(encoded + b"tail", 0) == (n, len(encoded))


def test_varint_out_of_range_is_refused() -> None:
    for n in (-1, 268_435_456):
        with pytest.raises(ValueError):
            wire.varint(n)


def test_publish_round_trips_through_both_decoders() -> None:
    sizes = ((0, 1), (100, 2), (200, 3), (20_000, 65535))  # remaining length in 1, 1, 2 and 3 bytes
    packets = [wire.publish(b"a/b", b"x" * size, mid) for size, mid in sizes]
    publishes, others, used = wire.split_publishes(bytearray(b"".join(packets)))
    assert used == sum(map(len, packets)) and others == []
    assert publishes == [("a/b", mid, b"x" * size) for size, mid in sizes]
    assert [len(p) for p in packets] == [1 + 1 + 8, 1 + 1 + 108, 1 + 2 + 208, 1 + 3 + 20_008]
    generic, _ = wire.split(b"".join(packets))
    assert [wire.decode_publish(flags, body) for _, flags, body in generic] == publishes
    assert {(kind, flags) for kind, flags, _ in generic} == {(wire.PUBLISH, 0x02)}  # QoS 1, no DUP/retain


def test_connect_encodes_the_session_and_credentials() -> None:
    packet = wire.connect(
        "dev-1",
        username="u",
        password="p",
        keepalive_s=30,
        clean_start=False,
        session_expiry_s=3600,
        receive_maximum=1000,
    )
    [(kind, flags, body)], used = wire.split(packet)
    assert (kind, flags, used) == (1, 0, len(packet))
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0x80 | 0x40  # username, password, no clean start
    assert struct.unpack("!H", body[8:10]) == (30,)
    assert body[10:19] == b"\x08\x11" + (3600).to_bytes(4, "big") + b"\x21" + (1000).to_bytes(2, "big")
    assert body[19:] == b"\x00\x05dev-1\x00\x01u\x00\x01p"
    anonymous = wire.split(wire.connect("c"))[0][0][2]
    assert anonymous[7] == 0x02 and anonymous.endswith(b"\x00\x01c")
    with pytest.raises(ValueError):
        wire.connect("c", receive_maximum=0)


def test_subscribe_pubacks_connack_and_suback() -> None:
    [(kind, flags, body)], _ = wire.split(wire.subscribe(9, ["a/+", "$share/g/b/#"]))
    assert (kind, flags) == (8, 2)  # SUBSCRIBE's reserved flags are 0010
    assert body == b"\x00\x09\x00" + b"\x00\x03a/+\x01" + b"\x00\x0c$share/g/b/#\x01"
    acks, _ = wire.split(wire.pubacks([1, 258, 65535]))
    assert [(k, b) for k, _, b in acks] == [(wire.PUBACK, b"\x00\x01"), (4, b"\x01\x02"), (4, b"\xff\xff")]
    assert wire.decode_connack(b"\x01\x00\x00") == (True, 0)
    assert wire.decode_connack(b"\x00\x86") == (False, 0x86)
    assert wire.decode_suback(b"\x00\x09\x00\x01\x87") == (9, b"\x01\x87")
    assert wire.decode_suback(b"\x00\x09\x03\x1f\x00\x00\x01") == (9, b"\x01")  # with properties


def test_split_publishes_matches_split_and_decode_publish() -> None:
    data = _stream()
    publishes, others, used = wire.split_publishes(bytearray(data))
    packets, used_generic = wire.split(bytearray(data))
    assert used == used_generic == len(data)
    assert publishes == [wire.decode_publish(f, b) for k, f, b in packets if k == wire.PUBLISH]
    assert others == [(k, f, b) for k, f, b in packets if k != wire.PUBLISH]
    assert publishes[300] == ("x/" * 100, 0, b"p" * 300)
    assert publishes[-1] == ("nattery/v1/s/d/telemetry", 65535, b"")
    assert [kind for kind, _, _ in others] == [wire.SUBACK, wire.PINGRESP]


def test_split_publishes_stops_at_a_partial_packet() -> None:
    data = _stream()
    for cut in [*random.Random(1).sample(range(len(data)), 300), 1, 2, 3]:
        publishes, others, used = wire.split_publishes(bytearray(data[:cut]))
        packets, used_generic = wire.split(bytearray(data[:cut]))
        assert used == used_generic <= cut
        assert len(publishes) + len(others) == len(packets)


# --- malformed packets --------------------------------------------------------------------------------
NEXT = wire.publish(b"next", b"must not be read as part of the bad one", 5)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"\x32\x05\x00\x09abc", id="topic-longer-than-packet"),
        pytest.param(b"\x32\x05\x00\x02ab\x00", id="qos1-packet-id-cut"),
        pytest.param(b"\x32\x06\x00\x01a\x00\x01\x05", id="properties-longer-than-packet"),
        pytest.param(b"\x32\x07\x00\x02\xff\xfe\x00\x01\x00", id="topic-not-utf8"),
        pytest.param(b"\x30\x00", id="empty-publish"),
    ],
)
def test_a_malformed_publish_is_a_protocol_error_not_a_read_into_the_next(bad: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.split_publishes(bytearray(bad + NEXT))
    with pytest.raises(wire.ProtocolError):
        wire.split_publishes(bytearray(bad))
    [(_, flags, body), _], _ = wire.split(bad + NEXT)
    with pytest.raises(wire.ProtocolError):
        wire.decode_publish(flags, body)


def test_a_remaining_length_over_four_bytes_is_a_protocol_error() -> None:
    bad = b"\x32\xff\xff\xff\xff\x01"
    with pytest.raises(wire.ProtocolError):
        wire.split(bad)
    with pytest.raises(wire.ProtocolError):
        wire.split_publishes(bytearray(bad))
    # ...while a length that is only cut short so far waits for more bytes.
    assert wire.split(b"\x32\xff\xff") == ([], 0)
    assert wire.split_publishes(bytearray(b"\x32\xff\xff")) == ([], [], 0)


def test_short_connack_and_suback_are_protocol_errors() -> None:
    for body in (b"", b"\x00"):
        with pytest.raises(wire.ProtocolError):
            wire.decode_connack(body)
    for body in (b"\x00\x01", b"\x00\x01\x00", b"\x00\x01\x05\x00"):
        with pytest.raises(wire.ProtocolError):
            wire.decode_suback(body)


# --- against Mosquitto ----------------------------------------------------------------------------
def _settings(password: str = "nattery-dev", port: int = TEST_MQTT_PORT) -> MqttSettings:
    return MqttSettings(port=port, username="device-service", password=SecretStr(password))


@pytest.fixture
async def session() -> AsyncIterator[tuple[str, str]]:
    """(client id, topic): a topic of four levels, which no service's subscription matches."""
    client_id = f"kit-test-{uuid.uuid4().hex[:8]}"
    yield client_id, f"nattery/v1/kittest-{uuid.uuid4().hex[:8]}/x"
    await forget_session_async(_settings(), client_id)


async def _publish_and_wait_acks(topic: str, payloads: list[bytes]) -> None:
    reader, writer, buf = await open_connection(_settings(), f"kit-test-pub-{uuid.uuid4().hex[:8]}")
    try:
        writer.write(b"".join(wire.publish(topic.encode(), p, i + 1) for i, p in enumerate(payloads)))
        acked: list[int] = []
        async with asyncio.timeout(10):
            while len(acked) < len(payloads):
                packets, used = wire.split(buf)
                del buf[:used]
                acked += [int.from_bytes(b[:2], "big") for k, _, b in packets if k == wire.PUBACK]
                if len(acked) < len(payloads):
                    buf += await reader.read(65536)
        assert sorted(acked) == list(range(1, len(payloads) + 1))
        writer.write(wire.DISCONNECT_NORMAL)
        await writer.drain()
    finally:
        writer.close()


async def _take(sub: AckingSubscriber, n: int) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(10):
        while len(got) < n:
            got += await sub.next_batch(n - len(got))
    return got


async def test_an_unacknowledged_message_comes_again_after_a_reconnect(session: tuple[str, str]) -> None:
    client_id, topic = session
    first = AckingSubscriber(_settings(), client_id=client_id, filters=[topic], name="kit-test")
    first.start()
    try:
        async with asyncio.timeout(10):
            await first.connected.wait()
        assert first.session_present is False
        await _publish_and_wait_acks(topic, [b"one", b"two"])
        one, two = await _take(first, 2)
        assert (one.topic, one.payload, two.payload) == (topic, b"one", b"two")
        assert one.mid and two.mid and one.mid != two.mid
        assert first.ack([one]) == 1  # "two" stays unacknowledged
    finally:
        await first.close()

    second = AckingSubscriber(_settings(), client_id=client_id, filters=[topic], name="kit-test")
    second.start()
    try:
        async with asyncio.timeout(10):
            await second.connected.wait()
        assert second.session_present is True
        await _publish_and_wait_acks(topic, [b"three"])
        # "two" comes again before "three"; "one" was acknowledged, so it does not.
        again, three = await _take(second, 2)
        assert (again.payload, three.payload) == (b"two", b"three")
        assert first.ack([two]) == 0  # the old connection's delivery: nothing to send
        assert second.ack([again, three]) == 2
        assert second.backlog == 0
    finally:
        await second.close()


async def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(ConnectRefused, match=r"0x86|0x87"):
        await open_connection(_settings("wrong"), f"kit-test-{uuid.uuid4().hex[:8]}")


async def test_the_subscriber_reconnects_by_itself_and_gets_the_unacknowledged_again(
    session: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client_id, topic = session
    caplog.set_level(logging.INFO, logger="kit-test.mqtt")
    proxy = TcpProxy("127.0.0.1", TEST_MQTT_PORT)
    await proxy.start()
    sub = AckingSubscriber(
        _settings(port=proxy.port),
        client_id=client_id,
        filters=[topic],
        name="kit-test",
        logger=logging.getLogger("kit-test.mqtt"),
    )
    sub.start()
    try:
        async with asyncio.timeout(10):
            await sub.connected.wait()
        await _publish_and_wait_acks(topic, [b"before the cut"])
        [first] = await _take(sub, 1)
        await proxy.cut()
        await eventually(lambda: not sub.connected.is_set(), timeout_s=10)
        assert sub.ack([first]) == 0  # no connection: the PUBACK cannot go out
        await proxy.restore()
        await eventually(sub.connected.is_set, timeout_s=10)
        assert sub.session_present is True
        [again] = await _take(sub, 1)
        assert (again.payload, again.generation) == (b"before the cut", first.generation + 1)
        assert sub.ack([first]) == 0  # a delivery of the dropped connection is not acked on this one
        assert sub.ack([again]) == 1
        # Logged under the caller's logger: two connects, the drop once, the recovery once.
        messages = [r.getMessage() for r in caplog.records if r.name == "kit-test.mqtt"]
        assert sum("connected (session present" in m for m in messages) == 2, messages
        assert sum("broker connection failing" in m for m in messages) == 1, messages
        assert sum("broker connection works again" in m for m in messages) == 1, messages
    finally:
        await sub.close()
        await proxy.close()
