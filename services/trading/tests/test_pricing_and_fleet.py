"""Tariff pricing, the price CSV reader and the fleet work queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import aio_pika
import numpy as np
import pytest

from nattery_shared.testing import TEST_RABBIT_URL
from nattery_trading.fleet.jobs import batch, decode_job, encode_job, run_job
from nattery_trading.fleet.queue import declare, publish_jobs, worker
from nattery_trading.optimiser import PlanInput, Site
from nattery_trading.tariffs.loader import read_price_csv
from nattery_trading.tariffs.pricing import Tariff, TouRate, slot_prices


def test_time_of_use_follows_local_time_across_dst() -> None:
    # Economy 7 style: 00:30-07:30 local at 10p, otherwise 30p
    t = Tariff(
        "time_of_use",
        rates=(TouRate(time(0, 30), time(7, 30), 10.0), TouRate(time(7, 30), time(0, 30), 30.0)),
    )
    summer, _ = slot_prices(t, datetime(2022, 7, 1, 0, 0, tzinfo=UTC), 30, 48)  # BST: 00:30 local = 23:30 UTC
    assert summer[0] == 10.0  # 01:00 BST
    assert summer[13] == 30.0  # 06:30 UTC = 07:30 BST
    winter, _ = slot_prices(t, datetime(2022, 1, 10, 0, 0, tzinfo=UTC), 30, 48)
    assert winter[0] == 30.0 and winter[1] == 10.0 and winter[15] == 30.0


def test_dynamic_prices_forecast_beyond_published() -> None:
    start = datetime(2022, 3, 1, tzinfo=UTC)
    known = {
        start - timedelta(days=d) + timedelta(minutes=30 * i): float(i)
        for d in range(1, 8)
        for i in range(48)
    }
    known.update({start + timedelta(minutes=30 * i): 100.0 for i in range(10)})
    prices, forecast = slot_prices(Tariff("dynamic", known=known), start, 30, 48)
    assert (prices[:10] == 100.0).all() and not forecast[:10].any()
    assert forecast[10:].all() and prices[20] == pytest.approx(20.0)


def test_fixed_and_price_csv(tmp_path: Path) -> None:
    prices, _ = slot_prices(Tariff("fixed", fixed_p_per_kwh=15.0), datetime(2022, 1, 1, tzinfo=UTC), 30, 4)
    assert np.allclose(prices, 15.0)
    p = tmp_path / "p.csv"
    p.write_text(
        "timestamp_utc,price_p_per_kwh_inc_vat\n2022-01-01 00:00:00+00:00,10\n2022-01-01T00:30:00Z,-2\n"
    )
    rows = read_price_csv(p)
    assert rows[1] == (datetime(2022, 1, 1, 0, 30, tzinfo=UTC), datetime(2022, 1, 1, 1, 0, tzinfo=UTC), -2.0)


def _job(soc: float) -> bytes:
    t0 = datetime(2022, 6, 1, tzinfo=UTC)
    inp = PlanInput(
        start=t0,
        slot_minutes=30,
        import_price_p_per_kwh=np.array([10.0, 30.0, 5.0, 40.0]),
        export_price_p_per_kwh=np.full(4, 5.0),
        load_kw=np.full(4, 0.5),
        pv_kw=np.zeros(4),
        initial_soc_pct=soc,
        site=Site(export_limit_kw=3.68),
    )
    return encode_job(uuid.uuid4(), uuid.uuid4(), inp)


def test_job_round_trip() -> None:
    body = _job(40.0)
    _, _, inp = decode_job(body)
    assert inp.site.export_limit_kw == 3.68 and inp.site.import_limit_kw == float("inf")
    res = json.loads(run_job(body))
    assert res["status"] == "Optimal" and len(res["reasons"]) == 4
    many = json.loads(run_job(batch([_job(20.0), _job(80.0)], 2)[0]))
    assert [len(r["battery_power_kw"]) for r in many] == [4, 4]


@pytest.mark.timeout(60)
async def test_fleet_queue_competing_consumers() -> None:
    suffix = uuid.uuid4().hex[:8]
    jobs_q, results_q = f"tests.fleet_plans.{suffix}", f"tests.fleet_results.{suffix}"
    conn = await aio_pika.connect_robust(TEST_RABBIT_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        _, results = await declare(ch, jobs_q, results_q)
        workers = [asyncio.create_task(worker(TEST_RABBIT_URL, 4, 1.5, jobs_q, results_q)) for _ in range(2)]
        await publish_jobs(ch, batch([_job(float(s)) for s in range(10, 90, 2)], 5), jobs_queue=jobs_q)
        done = await asyncio.gather(*workers)
        assert sum(done) == 8  # 40 batteries in 8 messages, shared by both consumers
        got = 0
        while (msg := await results.get(fail=False)) is not None:
            got += len(json.loads(msg.body))
            await msg.ack()
        assert got == 40
        for q in (jobs_q, results_q, f"{jobs_q}.dlq"):
            await ch.queue_delete(q)
