"""The bridge end to end: real simulator on a pty pair, bridge subprocess, project Mosquitto with a site
user and ACL, commands from device-service's account."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bridge_harness import MQTT_HOST, MQTT_PORT, BridgeProcess, Cloud, TcpProxy, bridge_env, cloud, iso

pytestmark = pytest.mark.usefixtures("site_user")


def new_device() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def bridge(
    rig: Any, tmp: Path, device: str, mqtt_port: int = MQTT_PORT, **env: str
) -> AsyncIterator[BridgeProcess]:
    b = BridgeProcess(tmp, bridge_env(tmp, device, rig.bridge_port, mqtt_port, **env)).start()
    try:
        yield b
    finally:
        rc = b.stop()
        if rc not in (0, -15, None):
            print(b.log_text()[-4000:])
        assert rc in (0, -15, None), f"bridge exited with {rc}"


def sim_power(rig: Any) -> float:
    return float(rig.truth()["truth"]["battery_power_w"])


async def settle(c: Cloud, rig: Any, pred: Any, what: str, within: float = 5.0) -> dict[str, Any]:
    found: dict[str, Any] = await c.wait_for(lambda: (st := rig.truth()) and pred(st) and st, within, what)
    return found


async def test_commands_drive_the_battery_within_the_envelope(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    async with cloud(device) as c, bridge(rig, tmp_path, device) as b:
        await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
        state = await c.wait_for(lambda: c.of("state"), 5, "state")
        assert state[-1]["status"] == "online" and state[-1]["profile"] == "deye-sunsynk-1ph"

        # charge 2 kW: register writes, the simulated battery charges, telemetry shows it
        cid = await c.command("set_power", {"battery_power_w": -2000})
        await c.ack(cid, "accepted")
        done = await c.ack(cid, "done")
        assert done["applied"]["target"] == {"mode": "charge", "power_w": 2000.0, "target_soc_pct": 100.0}
        regs = done["applied"]["registers"]
        assert regs["grid_charge_enabled"] == 1 and regs["tou_enabled"] == 1 and regs["tou1_grid_charge"] == 1
        assert done["applied"]["written_registers"] > 0
        st = await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 2000) < 1, "sim charging")
        assert st["mode"] == "grid-charge"
        soc0 = st["truth"]["battery_soc_pct"]
        await c.next_telemetry(lambda v: abs(v["battery_power_w"] + 2000) <= 1, 5, "telemetry charging")
        await settle(c, rig, lambda s: s["truth"]["battery_soc_pct"] > soc0 + 0.3, "SOC rising")

        # hold: neither charges nor discharges
        cid = await c.command("set_mode", {"mode": "hold"})
        await c.ack(cid, "done")
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"]) < 1, "sim holding")
        await c.next_telemetry(lambda v: v["battery_power_w"] == 0, 5, "telemetry holding")

        # discharge 1.5 kW: the house (~0.26 kW) plus export, within the 3.68 kW export limit
        cid = await c.command("set_power", {"battery_power_w": 1500})
        done = await c.ack(cid, "done")
        assert done["applied"]["registers"]["max_sell_power_w"] == 3680
        st = await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] - 1500) < 1, "sim discharging")
        assert st["truth"]["grid_power_w"] < -1000  # exporting
        await c.next_telemetry(lambda v: abs(v["battery_power_w"] - 1500) <= 1, 5, "telemetry discharging")

        # the same command again (same id): same ack, nothing run twice
        writes = b.metrics()["bridge_register_writes_total"]
        await c.raw_command(
            json.dumps(
                {
                    "id": cid,
                    "type": "set_power",
                    "params": {"battery_power_w": -500},
                    "issued_at": iso(datetime.now(UTC)),
                    "expires_at": iso(datetime.now(UTC) + timedelta(minutes=2)),
                }
            ).encode()
        )
        await c.wait_for(
            lambda: len([a for a in c.acks(cid) if a["status"] == "done"]) == 2, 5, "repeated ack"
        )
        assert c.acks(cid)[-1] == done
        assert b.metrics()["bridge_register_writes_total"] == writes
        assert abs(sim_power(rig) - 1500) < 1

        # envelope: clamped with its reason
        cid = await c.command("set_power", {"battery_power_w": -9000})
        done = await c.ack(cid, "done")
        assert "clamped to max_charge_w 5000" in done["reason"]
        assert done["applied"]["target"]["power_w"] == 5000
        # the inverter takes amps: limits are converted so they hold at any plausible voltage
        await settle(c, rig, lambda s: -5000 <= s["truth"]["battery_power_w"] < -4400, "sim charging ~5 kW")

        # limits: narrowed by an admin command (persisted), never widened past the site's hard limits
        limits = {
            "soc_min_pct": 20,
            "soc_max_pct": 95,
            "max_charge_w": 2500,
            "max_discharge_w": 2000,
            "battery_temp_min_c": 0,
            "battery_temp_max_c": 45,
            "export_limit_w": 1000,
        }
        cid = await c.command("set_limits", {"limits": limits})
        await c.ack(cid, "done")
        cid = await c.command("set_limits", {"limits": {**limits, "max_charge_w": 9000}})
        rej = await c.ack(cid, "rejected")
        assert "max_charge_w 9000 above hard limit 5000" in rej["reason"]
        cid = await c.command("set_power", {"battery_power_w": -4000})
        done = await c.ack(cid, "done")
        assert "clamped to max_charge_w 2500" in done["reason"]
        await settle(c, rig, lambda s: -2500 <= s["truth"]["battery_power_w"] < -2200, "sim charging ~2.5 kW")
        cid = await c.command("set_power", {"battery_power_w": 1800})
        done = await c.ack(cid, "done")
        st = await settle(c, rig, lambda s: s["truth"]["battery_power_w"] > 0, "sim discharging")
        assert st["truth"]["grid_power_w"] >= -1000 - 1  # export limit held by the inverter
        assert done["applied"]["registers"]["max_sell_power_w"] == 1000

        # refused: discharging below soc_min, and outside the temperature window (that also ends the
        # active control: the fail-safe takes over)
        soc = rig.truth()["truth"]["battery_soc_pct"]
        cid = await c.command("set_limits", {"limits": {**limits, "soc_min_pct": min(90, soc + 5)}})
        await c.ack(cid, "done")
        await c.next_telemetry(lambda v: True, 5, "fresh telemetry")
        cid = await c.command("set_power", {"battery_power_w": 1000})
        rej = await c.ack(cid, "rejected")
        assert "soc_min" in rej["reason"]
        cid = await c.command("set_limits", {"limits": {**limits, "battery_temp_min_c": 30}})
        await c.ack(cid, "done")
        cid = await c.command("set_power", {"battery_power_w": -1000})
        rej = await c.ack(cid, "rejected")
        assert "temperature" in rej["reason"]
        ev = await c.wait_for(lambda: c.events("failsafe.activated"), 5, "fail-safe on envelope")
        assert ev[-1]["details"]["reason"] == "envelope"

        # malformed and expired commands: answered, never a crash
        cid = str(uuid.uuid4())
        await c.raw_command(
            json.dumps(
                {
                    "id": cid,
                    "type": "set_power",
                    "params": {"watts": 5},
                    "issued_at": iso(datetime.now(UTC)),
                    "expires_at": iso(datetime.now(UTC) + timedelta(minutes=1)),
                }
            ).encode()
        )
        rej = await c.ack(cid, "rejected")
        assert "battery_power_w" in rej["reason"]
        cid = str(uuid.uuid4())
        await c.raw_command(json.dumps({"id": cid, "type": "self_destruct"}).encode())
        assert "invalid command" in (await c.ack(cid, "rejected"))["reason"]
        await c.raw_command(b"\xff not json")
        await c.wait_for(lambda: c.events("command.invalid"), 5, "invalid command event")
        cid = await c.command(
            "set_power",
            {"battery_power_w": -1000},
            issued_at=datetime.now(UTC) - timedelta(minutes=10),
            expires_in=300,
        )
        await c.ack(cid, "expired")
        # sentinel: acks leave in order, so once a later command's ack is here, any other ack of the
        # expired one would be too
        sentinel = await c.command("refresh")
        await c.ack(sentinel, "done")
        assert not [a for a in c.acks(cid) if a["status"] != "expired"]
        assert b.proc is not None and b.proc.poll() is None
        m = b.metrics()
        assert m['bridge_commands_total{status="rejected"}'] >= 4
        assert m["bridge_register_writes_skipped_total"] > 0


async def test_expiry_and_lost_link_return_to_the_safe_program(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    proxy = await TcpProxy(MQTT_HOST, MQTT_PORT).start()
    try:
        async with (
            cloud(device) as c,
            bridge(rig, tmp_path, device, proxy.port, NATTERY_BRIDGE_LINK_GRACE_S="3") as b,
        ):
            await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
            # expiry
            cid = await c.command("set_power", {"battery_power_w": -2000}, expires_in=2)
            await c.ack(cid, "done")
            await settle(c, rig, lambda s: s["mode"] == "grid-charge", "charging")
            ev = await c.wait_for(lambda: c.events("failsafe.activated"), 6, "fail-safe after expiry")
            assert ev[-1]["details"]["reason"] == "control_expired"
            st = await settle(c, rig, lambda s: s["mode"] == "self-consumption", "safe program")
            assert st["truth"]["battery_power_w"] > 0  # the battery serves the house again

            # lost link: after the grace the inverter goes back to the safe program, on its own
            cid = await c.command("set_power", {"battery_power_w": -2000}, expires_in=600)
            await c.ack(cid, "done")
            await settle(c, rig, lambda s: s["mode"] == "grid-charge", "charging")
            await proxy.cut()
            # once the bridge knows the link is down, the control is kept for the grace (its length
            # is checked on a fake clock in test_safety.py); then the safe program takes over
            await c.wait_for(lambda: b.metrics()["bridge_mqtt_connected"] == 0, 5, "link down noticed")
            assert rig.truth()["mode"] == "grid-charge"
            assert b.metrics().get('bridge_failsafe_activations_total{reason="link_lost"}', 0) == 0
            await settle(c, rig, lambda s: s["mode"] == "self-consumption", "safe program offline", 10)
            assert b.metrics()['bridge_failsafe_activations_total{reason="link_lost"}'] == 1
            offline = await c.wait_for(
                lambda: [s for s in c.of("state") if s["status"] == "offline"], 15, "last will"
            )
            assert offline
            await proxy.restore()
            ev = await c.wait_for(
                lambda: [e for e in c.events("failsafe.activated") if e["details"]["reason"] == "link_lost"],
                15,
                "link_lost event after reconnect",
            )
            assert ev[-1]["details"]["previous"]["command_id"] == cid
            await c.wait_for(lambda: c.of("state")[-1]["status"] == "online", 10, "online again")
    finally:
        await proxy.close()


async def test_schedule_runs_offline_until_valid_until(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    proxy = await TcpProxy(MQTT_HOST, MQTT_PORT).start()
    try:
        async with (
            cloud(device) as c,
            bridge(rig, tmp_path, device, proxy.port, NATTERY_BRIDGE_LINK_GRACE_S="1") as _,
        ):
            await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
            now = datetime.now(UTC)
            slots = [
                {
                    "start": iso(now - timedelta(seconds=1)),
                    "end": iso(now + timedelta(seconds=4)),
                    "mode": "charge",
                    "battery_power_w": -2000,
                },
                {
                    "start": iso(now + timedelta(seconds=4)),
                    "end": iso(now + timedelta(seconds=8)),
                    "mode": "discharge",
                    "battery_power_w": 1000,
                    "target_soc_pct": 15,
                },
            ]
            cid = await c.command(
                "set_schedule", {"slots": slots, "valid_until": iso(now + timedelta(seconds=9))}
            )
            await c.ack(cid, "done")
            await proxy.cut()  # the schedule keeps running without the cloud
            await settle(
                c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 2000) < 1, "slot 1 charging", 4
            )
            await settle(
                c, rig, lambda s: abs(s["truth"]["battery_power_w"] - 1000) < 1, "slot 2 discharging", 6
            )
            st = await settle(c, rig, lambda s: s["mode"] == "self-consumption", "safe after valid_until", 6)
            assert 0 < st["truth"]["battery_power_w"] < 1000
            await proxy.restore()
            ev = await c.wait_for(lambda: c.events("failsafe.activated"), 15, "schedule_expired event")
            assert ev[-1]["details"]["reason"] == "schedule_expired"
    finally:
        await proxy.close()


async def test_emergency_stop_latches_and_works_locally(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    async with cloud(device) as c:
        async with bridge(rig, tmp_path, device) as b:
            await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
            before = datetime.now(UTC)
            cid = await c.command("set_power", {"battery_power_w": -2000})
            await c.ack(cid, "done")
            cid = await c.command("emergency_stop", expires_in=10)
            done = await c.ack(cid, "done")
            assert done["applied"]["registers"]["inverter_enabled"] == 0
            await settle(c, rig, lambda s: s["mode"] == "off", "inverter off")
            # a command issued before the stop cannot undo it; expiry of the stop does not either
            cid = await c.command("set_power", {"battery_power_w": -1000}, issued_at=before)
            assert "emergency stop" in (await c.ack(cid, "rejected"))["reason"]
            # released by a later explicit control command
            cid = await c.command("set_mode", {"mode": "self_consumption"})
            done = await c.ack(cid, "done")
            assert "emergency stop released" in done["reason"]
            await settle(c, rig, lambda s: s["mode"] == "self-consumption", "running again")
            # local emergency stop (no cloud needed): SIGUSR1
            assert b.proc is not None
            b.proc.send_signal(signal.SIGUSR1)
            await settle(c, rig, lambda s: s["mode"] == "off", "inverter off (local)")
            await c.wait_for(lambda: c.events("emergency_stop"), 5, "emergency_stop event")
            cid = await c.command("refresh")
            await c.ack(cid, "done")
        # a clean shutdown says offline (the last will only covers a lost connection)
        await c.wait_for(lambda: c.of("state")[-1]["status"] == "offline", 5, "offline on a clean stop")


async def test_home_assistant_discovery(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory("--time-factor", "0")
    device = new_device()
    async with (
        cloud(device) as c,
        bridge(rig, tmp_path, device, NATTERY_BRIDGE_DISCOVERY__ENABLED="true") as _,
    ):
        prefix = f"{c.prefix}/ha"

        def configs() -> list[Any]:
            return [m for m in c.messages if m.topic.startswith(prefix + "/sensor/")]

        # sentinel: the bridge sends every config (each PUBACKed) before it drains any telemetry
        await c.wait_for(lambda: c.telemetry(), 10, "telemetry after the discovery configs")
        first = len(configs())
        assert first > 0
        # .../sensor/{site slug}/{device}_{value}/config
        object_prefix = device.replace("-", "_") + "_"
        by_name = {m.topic.split("/")[-2].removeprefix(object_prefix): m.payload for m in configs()}
        soc = by_name["battery_soc_pct"]
        assert soc["dev_cla"] == "battery" and soc["unit_of_meas"] == "%" and soc["stat_cla"] == "measurement"
        energy = by_name["battery_charge_energy_total_kwh"]
        assert energy["dev_cla"] == "energy" and energy["stat_cla"] == "total_increasing"
        assert by_name["battery_power_w"]["dev_cla"] == "power"
        assert soc["stat_t"] == f"{c.prefix}/telemetry" and soc["avty_t"] == f"{c.prefix}/state"
        # Home Assistant restarts and announces itself: discovery is sent again
        await c.client.publish(f"{prefix}/status", b"online", qos=1)
        await c.wait_for(lambda: len(configs()) >= 2 * first, 5, "discovery re-sent")
        for topic in {m.topic for m in configs()}:  # leave no retained configs behind on the broker
            await c.client.publish(topic, b"", qos=1, retain=True)


async def test_serial_faults_and_unplugged_port_survived(rig_factory: Any, tmp_path: Path) -> None:
    rig = rig_factory(
        "--time-factor",
        "0",
        "--chunked",
        "--chunk-gap-ms",
        "16",
        "--corrupt-crc-probability",
        "0.05",
        "--no-reply-probability",
        "0.05",
        "--exception-probability",
        "0.03",
        "--seed",
        "7",
    )
    device = new_device()
    async with (
        cloud(device) as c,
        bridge(
            rig,
            tmp_path,
            device,
            NATTERY_BRIDGE_TELEMETRY__FAST_INTERVAL_S="0.2",
            NATTERY_BRIDGE_SERIAL__STALE_AFTER_S="1",
            NATTERY_BRIDGE_SERIAL__STALE_PROBE_INTERVAL_S="0.5",
        ) as b,
    ):
        await c.wait_for(lambda: len(c.telemetry()) >= 15, 15, "telemetry under faults")
        m = b.metrics()
        errors = {k: v for k, v in m.items() if k.startswith("bridge_errors_total")}
        assert sum(errors.values()) > 0, errors
        truth = rig.truth()["truth"]
        for t in c.telemetry()[-5:]:
            assert t["values"].get("battery_soc_pct", truth["battery_soc_pct"]) == round(
                truth["battery_soc_pct"]
            )
        # USB unplug: the tty disappears; the bridge degrades, keeps running, and reopens it
        unplugged = 'bridge_errors_total{type="port_unavailable"}'
        port_errors_before = b.metrics().get(unplugged, 0)
        rig.unplug()
        await c.wait_for(lambda: c.of("state") and c.of("state")[-1]["status"] == "degraded", 10, "degraded")
        await c.wait_for(lambda: c.events("device.stale"), 5, "device.stale event")
        assert b.proc is not None and b.proc.poll() is None
        rig.replug()
        rig.control({"cmd": "clear"})
        n = len(c.telemetry())
        await c.wait_for(lambda: c.of("state")[-1]["status"] == "online", 15, "online again")
        await c.wait_for(lambda: len(c.telemetry()) >= n + 5, 10, "telemetry after replug")
        last = (await c.next_telemetry(lambda v: "battery_soc_pct" in v, 5, "fast telemetry"))["values"]
        truth = rig.truth()["truth"]
        assert last["battery_soc_pct"] == round(truth["battery_soc_pct"])
        assert last["battery_voltage_v"] == pytest.approx(truth["battery_voltage_v"], abs=0.006)
        assert b.metrics().get(unplugged, 0) > port_errors_before  # the unplug is counted


async def test_outage_store_and_forward_exactly_once_in_order(rig_factory: Any, tmp_path: Path) -> None:
    """Ten minutes of broker outage, accelerated: 0.1 s telemetry through a cut proxy until over 100
    samples wait in the outbox, with a bridge restart in the middle of the outage."""
    rig = rig_factory("--time-factor", "0")
    device = new_device()
    proxy = await TcpProxy(MQTT_HOST, MQTT_PORT).start()
    env = {
        "NATTERY_BRIDGE_TELEMETRY__FAST_INTERVAL_S": "0.1",
        "NATTERY_BRIDGE_TELEMETRY__SLOW_INTERVAL_S": "0",
        "NATTERY_BRIDGE_DISCOVERY__ENABLED": "false",
    }
    try:
        async with cloud(device) as c:
            async with bridge(rig, tmp_path, device, proxy.port, **env) as b:
                await c.wait_for(lambda: len(c.telemetry()) >= 5, 10, "telemetry")
                await proxy.cut()
                cut_at = datetime.now(UTC)
                await c.wait_for(lambda: b.metrics()["bridge_outbox_rows"] >= 50, 30, "50 rows waiting")
            seen_before_restart = len(c.telemetry())
            async with bridge(rig, tmp_path, device, proxy.port, **env) as b:
                await c.wait_for(lambda: (b.metric("bridge_outbox_rows") or 0) >= 100, 30, "100 rows waiting")
                await proxy.restore()
                restored_at = datetime.now(UTC)
                await c.wait_for(lambda: b.metrics()["bridge_outbox_rows"] == 0, 20, "outbox drained")
                # sentinel: a sample taken after the restore leaves after every row queued before it
                await c.wait_for(
                    lambda: [t for t in c.telemetry() if datetime.fromisoformat(t["ts"]) > restored_at],
                    10,
                    "a sample from after the restore",
                )
            tele = c.telemetry()
            assert len(tele) > seen_before_restart + 40
            seqs = [t["seq"] for t in tele]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gaps, duplicates or disorder"
            replayed = [t for t in tele if cut_at <= datetime.fromisoformat(t["ts"]) < restored_at]
            assert len(replayed) >= 40  # sampled during the outage, delivered afterwards with their own ts
            stamps = [datetime.fromisoformat(t["ts"]) for t in tele]
            assert stamps == sorted(stamps)
    finally:
        await proxy.close()


def test_watchdog_exits_non_zero_when_the_worker_is_stuck() -> None:
    code = (
        "import time\nfrom nattery_bridge.app import Watchdog\n"
        "w = Watchdog(lambda: time.monotonic() - 100, 1.0)\nw.start()\ntime.sleep(10)\n"
    )
    # Without the watchdog the child would sleep its 10 s out and exit 0.
    rc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20)
    assert rc.returncode == 70 and b"watchdog" in rc.stderr


async def test_outbox_disk_budget_drops_oldest_telemetry_and_says_so(
    rig_factory: Any, tmp_path: Path
) -> None:
    rig = rig_factory("--time-factor", "0")
    device = new_device()
    proxy = await TcpProxy(MQTT_HOST, MQTT_PORT).start()
    env = {
        "NATTERY_BRIDGE_TELEMETRY__FAST_INTERVAL_S": "0.1",
        "NATTERY_BRIDGE_TELEMETRY__SLOW_INTERVAL_S": "0",
        "NATTERY_BRIDGE_DISCOVERY__ENABLED": "false",
        "NATTERY_BRIDGE_OUTBOX_BUDGET_BYTES": "10000",
    }
    try:
        async with cloud(device) as c, bridge(rig, tmp_path, device, proxy.port, **env) as b:
            await c.wait_for(lambda: len(c.telemetry()) >= 3, 10, "telemetry")
            await proxy.cut()
            m = await c.wait_for(
                lambda: (m := b.metrics())["bridge_outbox_dropped_rows_total"] > 0 and m, 30, "rows dropped"
            )
            assert m["bridge_outbox_bytes"] <= 10000
            await proxy.restore()
            ev = await c.wait_for(lambda: c.events("outbox.dropped"), 15, "outbox.dropped event")
            assert ev[0]["details"]["rows"] > 0 and ev[0]["details"]["budget_bytes"] == 10000
            await c.wait_for(lambda: b.metrics()["bridge_outbox_rows"] == 0, 10, "outbox drained")
            seqs = [t["seq"] for t in c.telemetry()]
            assert seqs == sorted(set(seqs))  # the newest kept, in order, once; the oldest are gone
            assert seqs[-1] - seqs[0] + 1 > len(seqs)
    finally:
        await proxy.close()


async def test_control_state_survives_a_restart(rig_factory: Any, tmp_path: Path) -> None:
    """A control that expires while the bridge is down is ended at start-up; an emergency stop stays."""
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    async with cloud(device) as c:
        async with bridge(rig, tmp_path, device) as _:
            await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
            issued = datetime.now(UTC)
            cid = await c.command("set_power", {"battery_power_w": -2000}, expires_in=3, issued_at=issued)
            await c.ack(cid, "done")
        assert rig.truth()["mode"] == "grid-charge"  # Deye has no watchdog: it keeps charging
        seq_before = c.telemetry()[-1]["seq"]
        expires_at = issued + timedelta(seconds=3)
        await c.wait_for(lambda: datetime.now(UTC) > expires_at, 10, "the control's expiry, bridge down")
        async with bridge(rig, tmp_path, device) as _:
            ev = await c.wait_for(lambda: c.events("failsafe.activated"), 10, "fail-safe at start-up")
            assert ev[-1]["details"]["reason"] == "control_expired"
            await settle(c, rig, lambda s: s["mode"] == "self-consumption", "safe program")
            await c.wait_for(lambda: c.telemetry()[-1]["seq"] > seq_before, 10, "telemetry again")
            assert [t["seq"] for t in c.telemetry()] == sorted({t["seq"] for t in c.telemetry()})
            cid = await c.command("emergency_stop")
            await c.ack(cid, "done")
            await settle(c, rig, lambda s: s["mode"] == "off", "stopped")
        rig.control({"cmd": "restart", "seconds": 0.5})  # the inverter reboots with its power-on settings
        assert rig.truth()["mode"] != "off"  # so a stop seen after the restart is the bridge's doing
        async with bridge(rig, tmp_path, device) as _:
            await settle(c, rig, lambda s: s["mode"] == "off", "still stopped after both restarts", 10)


async def test_temperature_hold_stale_readings_readback_and_drift(rig_factory: Any, tmp_path: Path) -> None:
    """The safety claims through the real process, pty and broker, driven by the simulator's control
    socket: a hot battery holds (latched, released after the hysteresis wait), a silent sensor block
    holds it too, a write that does not take and a register changed behind the bridge's back are each
    reported, counted and re-applied."""
    rig = rig_factory("--time-factor", "60")
    device = new_device()
    env = {
        "NATTERY_BRIDGE_TEMPERATURE_RELEASE_AFTER_S": "2",
        "NATTERY_BRIDGE_READINGS_MAX_AGE_S": "3",
        "NATTERY_BRIDGE_DRIFT_CHECK_INTERVAL_S": "1",
    }
    async with cloud(device) as c, bridge(rig, tmp_path, device, **env) as b:
        await c.wait_for(lambda: c.telemetry(), 10, "first telemetry")
        cid = await c.command("set_power", {"battery_power_w": 1500})
        await c.ack(cid, "done")
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] - 1500) < 1, "discharging")

        rig.control({"cmd": "battery", "temperature_c": 55})
        ev = await c.wait_for(lambda: c.events("temperature.hold"), 10, "temperature.hold")
        assert ev[-1]["details"]["temperature_c"] == pytest.approx(55, abs=0.1)
        st = await settle(c, rig, lambda s: s["mode"] == "hold", "battery holds")
        assert st["truth"]["battery_power_w"] == 0  # not self-consumption at full current
        assert b.metrics()["bridge_temperature_hold"] == 1
        rig.control({"cmd": "battery", "temperature_c": 30})
        await c.wait_for(lambda: c.events("temperature.released"), 10, "temperature.released")
        await settle(c, rig, lambda s: s["mode"] == "self-consumption", "safe program again")

        cid = await c.command("set_power", {"battery_power_w": -1000})
        await c.ack(cid, "done")
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 1000) < 1, "charging")
        # the sensor block stops answering: blind, the battery holds; back, the control resumes
        rig.control({"cmd": "set", "silent_registers": [182]})
        ev = await c.wait_for(lambda: c.events("readings.stale"), 15, "readings.stale")
        assert "battery_temperature_c" in " ".join(ev[-1]["details"]["problems"])
        await settle(c, rig, lambda s: s["mode"] == "hold", "blind: holds", 10)
        rig.control({"cmd": "set", "silent_registers": []})
        await c.wait_for(lambda: c.events("readings.fresh"), 15, "readings.fresh")
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 1000) < 1, "charging again", 10)

        # a write that does not take: reported, re-applied at once, counted
        rig.control({"cmd": "set", "ignore_writes_next": 1})
        cid = await c.command("set_power", {"battery_power_w": -2000})
        await c.ack(cid, "done")
        ev = await c.wait_for(lambda: c.events("control.readback_mismatch"), 5, "readback mismatch")
        assert ev[-1]["details"]["registers"]
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 2000) < 1, "charging 2 kW")
        # drift: the charge current limit zeroed behind the bridge's back stops the charge; the drift
        # check finds it and the bridge writes it again
        rig.control({"cmd": "poke", "name": "battery_max_charge_current_a", "value": 0})
        ev = await c.wait_for(lambda: c.events("control.drift"), 10, "control.drift")
        await settle(c, rig, lambda s: abs(s["truth"]["battery_power_w"] + 2000) < 1, "re-applied", 10)
        m = b.metrics()
        assert m['bridge_register_mismatches_total{kind="readback"}'] == 1
        assert m['bridge_register_mismatches_total{kind="drift"}'] >= 1
