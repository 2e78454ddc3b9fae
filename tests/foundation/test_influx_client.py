"""The shared InfluxDB client against the real server: gzip batch write and typed query round trip;
a write while InfluxDB is unreachable is retried and lands once it is back."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from nattery_shared.influx import InfluxClient, line
from nattery_shared.settings import InfluxSettings
from nattery_shared.testing import TEST_INFLUX_DB, TEST_INFLUX_URL, TcpProxy

# Recent, minute-aligned: the test database keeps 7 days.
T0 = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)


async def test_batch_write_and_typed_query() -> None:
    client = InfluxClient(InfluxSettings(url=TEST_INFLUX_URL, database=TEST_INFLUX_DB))
    device = f"dev-{uuid.uuid4().hex[:8]}"
    try:
        lines = [
            line(
                "inverter",
                {"org": "o1", "site": "s1", "device": device},
                {"battery_power_w": float(i * 10), "battery_soc_pct": 50.0 + i / 100},
                T0 + timedelta(seconds=5 * i),
            )
            for i in range(1000)
        ]
        await client.write_lines(lines)
        series = await client.query(
            "SELECT count(battery_power_w) AS n, max(battery_power_w) AS peak FROM inverter WHERE device = $device",
            params={"device": device},
        )
        assert len(series) == 1
        [row] = series[0].rows
        assert row["n"] == 1000 and row["peak"] == 9990.0
        assert isinstance(row["time"], datetime) and row["time"].tzinfo is not None
        per_minute = await client.query(
            "SELECT mean(battery_power_w) FROM inverter WHERE device = $device AND time >= $start "
            "AND time < $end GROUP BY time(1m)",
            params={
                "device": device,
                "start": T0.isoformat(),
                "end": (T0 + timedelta(minutes=2)).isoformat(),
            },
        )
        means = [r["mean"] for r in per_minute[0].rows]
        assert means == [55.0, 175.0]  # 12 samples a minute: mean of 0..110 and 120..230
    finally:
        await client.close()


async def test_write_while_down_is_retried_and_lands() -> None:
    proxy = TcpProxy("127.0.0.1", int(TEST_INFLUX_URL.rsplit(":", 1)[1]))
    await proxy.start()
    await proxy.cut()  # InfluxDB "down": every connection dropped
    client = InfluxClient(InfluxSettings(url=f"http://127.0.0.1:{proxy.port}", database=TEST_INFLUX_DB))
    reader = InfluxClient(InfluxSettings(url=TEST_INFLUX_URL, database=TEST_INFLUX_DB))
    device = f"dev-{uuid.uuid4().hex[:8]}"
    try:
        write = asyncio.create_task(
            client.write_lines(
                [line("inverter", {"device": device}, {"battery_power_w": 1.0}, T0)], retry_for_s=60
            )
        )
        await asyncio.sleep(2.0)
        assert not write.done(), "the write should still be retrying while InfluxDB is down"
        await proxy.restore()
        await asyncio.wait_for(write, 20)
        series = await reader.query(
            "SELECT count(battery_power_w) FROM inverter WHERE device = $d", params={"d": device}
        )
        assert series[0].rows[0]["count"] == 1
    finally:
        await proxy.close()
        await client.close()
        await reader.close()
