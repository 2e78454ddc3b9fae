"""Publish telemetry like N sites, each with one inverter sending a realistic 25-field sample.

One (or a few) raw MQTT connections with the service account (the ACL lets it publish under every
site's prefix), so thousands of sites cost no thousands of connections or password-file entries.
Every sample has a distinct timestamp per device, so each one is a separate InfluxDB point.

    uv run python bench/loadgen/loadgen.py --sites 2000 --rate 5000 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nattery_shared.mqtt5 import wire

try:
    from . import mqtt_wire
except ImportError:  # run as a script
    import mqtt_wire  # type: ignore[no-redef]

# 25 fields named as in ARCHITECTURE §3 (units in names; battery + = discharge, grid + = import).
FIELDS: dict[str, tuple[float, float]] = {
    "battery_power_w": (-5000, 5000),
    "battery_soc_pct": (5, 100),
    "battery_voltage_v": (48, 56),
    "battery_current_a": (-100, 100),
    "battery_temp_c": (10, 40),
    "battery_soh_pct": (80, 100),
    "pv_power_w": (0, 6000),
    "pv1_power_w": (0, 3000),
    "pv2_power_w": (0, 3000),
    "pv1_voltage_v": (150, 450),
    "pv2_voltage_v": (150, 450),
    "grid_power_w": (-3680, 8000),
    "grid_voltage_v": (220, 250),
    "grid_current_a": (-16, 35),
    "grid_frequency_hz": (49.8, 50.2),
    "load_power_w": (100, 7000),
    "inverter_power_w": (-5000, 5000),
    "inverter_temp_c": (20, 60),
    "dc_temp_c": (20, 60),
    "grid_energy_import_kwh": (0, 20000),
    "grid_energy_export_kwh": (0, 20000),
    "pv_energy_kwh": (0, 30000),
    "battery_energy_charge_kwh": (0, 10000),
    "battery_energy_discharge_kwh": (0, 10000),
    "load_energy_kwh": (0, 40000),
}
assert len(FIELDS) == 25


def site_slug(prefix: str, i: int) -> str:
    return f"{prefix}-{i:05d}"


def values_json(rng: random.Random) -> bytes:
    return ",".join(f'"{k}":{round(rng.uniform(lo, hi), 2)}' for k, (lo, hi) in FIELDS.items()).encode()


@dataclass
class SiteStream:
    topic: bytes
    values: bytes
    seq: int = 0


@dataclass
class Stats:
    published: int = 0
    acked: int = 0
    started: float = field(default_factory=time.monotonic)
    probe_times: dict[str, float] = field(default_factory=dict)


def payload(ts_us: int, seq: int, values: bytes) -> bytes:
    # Integer arithmetic: a float round trip could shift the microsecond and merge two points.
    ts = datetime.fromtimestamp(ts_us // 1_000_000, UTC).replace(microsecond=ts_us % 1_000_000).isoformat()
    return b'{"ts":"%s","seq":%d,"values":{%s}}' % (ts.encode(), seq, values)


class LoadGenerator:
    def __init__(
        self,
        *,
        sites: int,
        prefix: str = "load",
        device: str = "inv1",
        host: str = "127.0.0.1",
        port: int = 1884,
        username: str = "device-service",
        password: str = "nattery-dev",
        connections: int = 2,
        max_inflight: int = 2000,
        seed: int = 7,
    ) -> None:
        rng = random.Random(seed)
        self.streams = [
            SiteStream(f"nattery/v1/{site_slug(prefix, i)}/{device}/telemetry".encode(), values_json(rng))
            for i in range(sites)
        ]
        self.host, self.port, self.username, self.password = host, port, username, password
        self.connections = connections
        self.max_inflight = max_inflight
        self.stats = Stats()
        self._last_ts_us = 0

    def _next_ts_us(self) -> int:
        # Unique per device even at high rates: never repeat a microsecond.
        now = int(time.time() * 1_000_000)
        self._last_ts_us = max(now, self._last_ts_us + 1)
        return self._last_ts_us

    async def run(self, rate_per_s: float, duration_s: float, *, stop: asyncio.Event | None = None) -> Stats:
        """Publish at ``rate_per_s`` spread over the sites round-robin for ``duration_s``."""
        self.stats = Stats()
        per_connection = rate_per_s / self.connections
        shards = [self.streams[i :: self.connections] for i in range(self.connections)]
        await asyncio.gather(
            *(self._connection(n, shard, per_connection, duration_s, stop) for n, shard in enumerate(shards))
        )
        return self.stats

    async def _connection(
        self,
        n: int,
        streams: Sequence[SiteStream],
        rate: float,
        duration_s: float,
        stop: asyncio.Event | None,
    ) -> None:
        reader, writer = await mqtt_wire.open_connection(
            self.host, self.port, f"loadgen-{n}-{random.getrandbits(32):08x}", self.username, self.password
        )
        inflight = asyncio.Semaphore(self.max_inflight)
        stats = self.stats

        async def read_acks() -> None:
            packets = mqtt_wire.packet_reader(reader)
            while True:
                for kind, _, _ in await packets.next_packets():
                    if kind == wire.PUBACK:
                        stats.acked += 1
                        inflight.release()

        acks = asyncio.create_task(read_acks())
        started = time.monotonic()
        sent = 0
        packet_id = 0
        index = 0
        tick_s = 0.01
        try:
            while time.monotonic() - started < duration_s and not (stop and stop.is_set()):
                due = int((time.monotonic() - started + tick_s) * rate) - sent
                chunk: list[bytes] = []
                for _ in range(max(due, 0)):
                    if inflight.locked() and chunk:  # send what we hold before waiting for acks
                        writer.write(b"".join(chunk))
                        sent += len(chunk)
                        stats.published += len(chunk)
                        chunk = []
                        await writer.drain()
                    await inflight.acquire()
                    stream = streams[index % len(streams)]
                    index += 1
                    stream.seq += 1
                    packet_id = packet_id % 65535 + 1
                    chunk.append(
                        mqtt_wire.publish_packet(
                            stream.topic, payload(self._next_ts_us(), stream.seq, stream.values), packet_id
                        )
                    )
                if chunk:
                    writer.write(b"".join(chunk))
                    sent += len(chunk)
                    stats.published += len(chunk)
                    await writer.drain()
                await asyncio.sleep(tick_s)
            deadline = time.monotonic() + 30
            while stats.acked < stats.published and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            acks.cancel()
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=2000)
    parser.add_argument("--prefix", default="load")
    parser.add_argument("--rate", type=float, default=2000, help="messages per second, all sites together")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--port", type=int, default=1884)
    args = parser.parse_args()
    generator = LoadGenerator(
        sites=args.sites, prefix=args.prefix, connections=args.connections, port=args.port
    )
    stats = asyncio.run(generator.run(args.rate, args.duration))
    elapsed = time.monotonic() - stats.started
    print(
        f"published {stats.published} (acked {stats.acked}) in {elapsed:.1f} s: {stats.published / elapsed:.0f} msg/s"
    )


if __name__ == "__main__":
    main()
