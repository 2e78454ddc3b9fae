"""``inverter-sim``: a Modbus RTU inverter (or flow transmitter) simulator on a serial port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime

from nattery_contracts.modbus import available_profiles, load_profile
from nattery_sim.clock import START_TIME_ENV, TIME_FACTOR_ENV, SimClock, time_factor
from nattery_sim.devices import BatteryConfig, DeyeInverter, FlowConfig, FlowTransmitter, SimDevice
from nattery_sim.faults import FaultConfig
from nattery_sim.profiles import SiteProfile
from nattery_sim.server import RtuSlave


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inverter-sim", description=__doc__)
    p.add_argument("--port", required=True, help="serial device or pty link, e.g. var/sites/x/ttyInv")
    p.add_argument("--profile", default="deye-sunsynk-1ph", choices=available_profiles())
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id (1..247)")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--bits-per-char", type=int, default=10, help="10 for 8N1, 11 for 8E1/8N2")
    p.add_argument("--turnaround-ms", type=float, default=30.0, help="device turnaround after t3.5")
    p.add_argument(
        "--time-factor",
        type=time_factor,
        default=os.environ.get(TIME_FACTOR_ENV) or "1",  # a string default goes through ``type``
        help=f"simulated seconds per wall second for the physics, energy counters and inverter clock "
        f"(the serial line stays real time); 0 freezes; default ${TIME_FACTOR_ENV} or 1",
    )
    p.add_argument("--tick-s", type=float, default=0.25, help="physics step, wall seconds")
    p.add_argument(
        "--max-step-s",
        type=float,
        default=None,
        help="longest physics sub-step, simulated seconds (default 30 for the inverter, 1 for the flow "
        "transmitter); longer steps are integrated in sub-steps",
    )
    p.add_argument(
        "--start-time",
        default=os.environ.get(START_TIME_ENV) or None,
        help=f"ISO time in the PV/load year (default: ${START_TIME_ENV}, else now, UTC)",
    )
    p.add_argument(
        "--word-order",
        choices=["low_first", "high_first"],
        default=None,
        help="override the profile's 32-bit word order",
    )
    g = p.add_argument_group("battery site (deye-sunsynk-1ph)")
    g.add_argument("--capacity-kwh", type=float, default=10.0)
    g.add_argument("--max-power-w", type=float, default=5000.0)
    g.add_argument(
        "--max-charge-w", type=float, default=None, help="battery charge limit (default max power)"
    )
    g.add_argument(
        "--max-discharge-w", type=float, default=None, help="battery discharge limit (default max power)"
    )
    g.add_argument("--charge-efficiency", type=float, default=0.95)
    g.add_argument("--discharge-efficiency", type=float, default=0.95)
    g.add_argument("--start-soc-pct", type=float, default=50.0)
    g.add_argument("--min-soc-pct", type=float, default=10.0, help="power-on battery shutdown SOC (reg 217)")
    g.add_argument("--max-soc-pct", type=float, default=100.0, help="charge ceiling")
    g.add_argument("--ambient-c", type=float, default=20.0)
    g.add_argument("--pv-kwp", type=float, default=4.0)
    g.add_argument("--load-scale", type=float, default=1.0)
    g.add_argument("--serial", default=None, help="serial number served in registers 3-7 (10 chars)")
    f = p.add_argument_group("fault injection (also at runtime through --control-socket)")
    f.add_argument("--no-reply-probability", type=float, default=0.0)
    f.add_argument("--no-reply-next", type=int, default=0)
    f.add_argument("--corrupt-crc-probability", type=float, default=0.0)
    f.add_argument("--corrupt-crc-next", type=int, default=0)
    f.add_argument("--exception-probability", type=float, default=0.0)
    f.add_argument("--exception-next", type=int, default=0)
    f.add_argument("--exception-code", type=int, default=4)
    f.add_argument("--chunked", action="store_true", help="replies in 16-byte pieces 16 ms apart")
    f.add_argument("--chunk-size", type=int, default=16)
    f.add_argument("--chunk-gap-ms", type=float, default=16.0)
    f.add_argument("--fault-code", action="append", default=[], help="raise a fault code, e.g. F13")
    f.add_argument(
        "--deaf-after-reply-ms", type=float, default=0.0, help="requests this soon after a reply are lost"
    )
    f.add_argument("--seed", type=int, default=None, help="random seed for probabilistic faults")
    p.add_argument("--control-socket", default=None, help="UNIX socket path for JSON-lines runtime control")
    p.add_argument("--log-level", default="INFO")
    return p


def build_device(args: argparse.Namespace) -> SimDevice:
    rmap = load_profile(args.profile)
    if args.word_order:
        rmap = rmap.with_word_order(args.word_order)
    if args.profile == "flow-transmitter":
        return FlowTransmitter(rmap, FlowConfig())
    cfg = BatteryConfig(
        capacity_kwh=args.capacity_kwh,
        max_power_w=args.max_power_w,
        max_charge_w=args.max_charge_w,
        max_discharge_w=args.max_discharge_w,
        max_soc_pct=args.max_soc_pct,
        charge_efficiency=args.charge_efficiency,
        discharge_efficiency=args.discharge_efficiency,
        start_soc_pct=args.start_soc_pct,
        min_soc_pct=args.min_soc_pct,
        ambient_c=args.ambient_c,
        serial=args.serial or f"SIM{args.unit:07d}",
    )
    return DeyeInverter(rmap, cfg, SiteProfile(pv_kwp=args.pv_kwp, load_scale=args.load_scale))


def build_slave(args: argparse.Namespace) -> RtuSlave:
    start = datetime.fromisoformat(args.start_time) if args.start_time else datetime.now(UTC)
    faults = FaultConfig(
        no_reply_probability=args.no_reply_probability,
        no_reply_next=args.no_reply_next,
        corrupt_crc_probability=args.corrupt_crc_probability,
        corrupt_crc_next=args.corrupt_crc_next,
        exception_probability=args.exception_probability,
        exception_next=args.exception_next,
        exception_code=args.exception_code,
        chunked=args.chunked,
        chunk_size=args.chunk_size,
        chunk_gap_ms=args.chunk_gap_ms,
        turnaround_ms=args.turnaround_ms,
        deaf_after_reply_ms=args.deaf_after_reply_ms,
        seed=args.seed,
    )
    device = build_device(args)
    if args.max_step_s is not None:
        if not args.max_step_s > 0:
            raise SystemExit("--max-step-s must be > 0")
        device.max_step_s = args.max_step_s
    if args.fault_code:
        device.set_fault_codes(set(args.fault_code))
    slave = RtuSlave(
        device,
        args.port,
        unit=args.unit,
        baud=args.baud,
        bits_per_char=args.bits_per_char,
        faults=faults,
        clock=SimClock(start, args.time_factor),
        tick_s=args.tick_s,
        control_socket=args.control_socket,
    )
    slave.tick()
    return slave


async def _amain(args: argparse.Namespace) -> int:
    slave = build_slave(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, slave.stop)
    await slave.run()
    return 1 if slave.failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raise SystemExit(asyncio.run(_amain(args)))


if __name__ == "__main__":
    main()
