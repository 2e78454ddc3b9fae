"""A simulated fleet: per site a socat pty pair, an inverter simulator and a ``modbus-bridge``.

    python -m nattery_sim.fleet --sites 3 [--root var/sites] [--prefix sim] [--no-bridge]

For site ``<slug>`` everything lives under ``<root>/<slug>/``: ``ttyInv`` (simulator end),
``ttyBridge`` (bridge end), ``ctl`` (simulator control socket), ``data/`` (bridge data dir) and the
logs ``socat.log``, ``sim.log``, ``bridge.log``. Sites differ deterministically (battery size, PV kWp,
load scale, start SOC) by index. The bridge is started only if the ``modbus-bridge`` console script is
installed; it is configured through environment variables (see edge/modbus-bridge/README.md): this
runner sets ``NATTERY_BRIDGE_SITE``, ``_DEVICE``, ``_PROFILE``, ``_DATA_DIR``, ``_SERIAL__PORT``,
``_SERIAL__UNIT``, ``_MQTT__USERNAME`` (= slug), ``_METRICS_PORT`` per site and passes every other
``NATTERY_BRIDGE_*`` variable of its own environment through (broker host/port/password, limits...).
``--time-factor`` (default ``$NATTERY_SIM_TIME_FACTOR``) and ``--start-time`` (``$NATTERY_SIM_START_TIME``)
go to every simulator: ``NATTERY_SIM_TIME_FACTOR=720 make run`` runs a simulated day in 2 minutes.
``--bridge-env KEY=VALUE`` adds more (``{slug}`` and ``{index}`` in VALUE are replaced per site), and a
``<root>/<slug>/bridge.env`` file (``KEY=VALUE`` lines, e.g. the site's MQTT password written by
whoever registers the site) overrides everything. Children that exit are restarted (with back-off); SIGINT/SIGTERM
stops them all (bridges, then simulators, then socat).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from nattery_sim.clock import START_TIME_ENV, TIME_FACTOR_ENV, time_factor
from nattery_sim.testing import PtyPair, SimProcess

log = logging.getLogger("nattery_sim.fleet")


@dataclass
class Site:
    slug: str
    index: int
    dir: Path
    sim_args: list[str]
    bridge_env: dict[str, str] | None
    pty: PtyPair | None = None
    sim: SimProcess | None = None
    bridge: subprocess.Popen[bytes] | None = None
    restarts: dict[str, float] = field(default_factory=dict)


def site_params(index: int, base_seed: int = 42) -> dict[str, float]:
    rng = random.Random(base_seed * 1000 + index)
    return {
        "capacity_kwh": rng.choice([5.0, 7.5, 10.0, 13.5, 15.0]),
        "pv_kwp": round(rng.uniform(2.5, 6.0), 1),
        "load_scale": round(rng.uniform(0.7, 1.8), 2),
        "start_soc_pct": float(rng.randint(20, 90)),
    }


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines and ``#`` comments ignored); {} if the file does not exist."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def bridge_command() -> list[str] | None:
    exe = Path(sys.executable).parent / "modbus-bridge"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("modbus-bridge")
    return [found] if found else None


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(args.root).resolve()
        self.bridge_cmd = None if args.no_bridge else bridge_command()
        self.sites: list[Site] = []
        self._stopping = False

    def plan(self) -> None:
        extra = dict(kv.split("=", 1) for kv in self.args.bridge_env)
        for i in range(self.args.sites):
            slug = f"{self.args.prefix}-{i + 1:03d}"
            d = self.root / slug
            p = site_params(i)
            sim_args = [
                "--profile", "deye-sunsynk-1ph", "--unit", str(self.args.unit), "--baud", str(self.args.baud),
                "--time-factor", str(self.args.time_factor),
                "--capacity-kwh", str(p["capacity_kwh"]), "--pv-kwp", str(p["pv_kwp"]),
                "--load-scale", str(p["load_scale"]), "--start-soc-pct", str(p["start_soc_pct"]),
                "--serial", f"NAT{i + 1:07d}", *self.args.sim_arg,
            ]  # fmt: skip
            if self.args.start_time:
                sim_args += ["--start-time", self.args.start_time]
            env = None
            if self.bridge_cmd:
                env = {k: v for k, v in os.environ.items() if not k.startswith("NATTERY_BRIDGE_")}
                env.update({k: v for k, v in os.environ.items() if k.startswith("NATTERY_BRIDGE_")})
                env.update(
                    {
                        "NATTERY_BRIDGE_SITE": slug,
                        "NATTERY_BRIDGE_DEVICE": "inverter-1",
                        "NATTERY_BRIDGE_PROFILE": "deye-sunsynk-1ph",
                        "NATTERY_BRIDGE_DATA_DIR": str(d / "data"),
                        "NATTERY_BRIDGE_SERIAL__PORT": str(d / "ttyBridge"),
                        "NATTERY_BRIDGE_SERIAL__UNIT": str(self.args.unit),
                        "NATTERY_BRIDGE_SERIAL__BAUDRATE": str(self.args.baud),
                        "NATTERY_BRIDGE_MQTT__USERNAME": slug,
                        "NATTERY_BRIDGE_METRICS_PORT": str(
                            self.args.metrics_base + i if self.args.metrics_base else 0
                        ),
                    }
                )
                env.update({k: v.format(slug=slug, index=i + 1) for k, v in extra.items()})
                env.update(read_env_file(d / "bridge.env"))
            self.sites.append(Site(slug, i, d, sim_args, env))

    # ------------------------------------------------------------ children
    def _start_pty(self, s: Site) -> None:
        s.pty = PtyPair(s.dir / "ttyInv", s.dir / "ttyBridge", log=s.dir / "socat.log").start()

    def _start_sim(self, s: Site) -> None:
        assert s.pty is not None
        s.sim = SimProcess(s.pty.a, control_socket=s.dir / "ctl", args=s.sim_args, log=s.dir / "sim.log")
        s.sim.start()

    def _start_bridge(self, s: Site) -> None:
        if not self.bridge_cmd or s.bridge_env is None:
            return
        (s.dir / "data").mkdir(parents=True, exist_ok=True)
        out = (s.dir / "bridge.log").open("ab")
        s.bridge = subprocess.Popen(self.bridge_cmd, env=s.bridge_env, stdout=out, stderr=out)
        out.close()

    def start(self) -> None:
        self.plan()
        for s in self.sites:
            s.dir.mkdir(parents=True, exist_ok=True)
            self._start_pty(s)
            self._start_sim(s)
            self._start_bridge(s)
            log.info("site %s: sim on %s%s", s.slug, s.dir / "ttyInv",
                     f", bridge on {s.dir / 'ttyBridge'}" if s.bridge else " (no bridge)")  # fmt: skip
        if not self.bridge_cmd and not self.args.no_bridge:
            log.warning("modbus-bridge is not installed: started simulators only")

    def _due(self, s: Site, what: str) -> bool:
        """Back-off between restarts of the same child: 1 s, doubling to 30 s."""
        now = time.monotonic()
        last = s.restarts.get(what)
        delay = min(30.0, s.restarts.get(what + ":delay", 0.5) * 2)
        if last is not None and now - last < delay:
            return False
        s.restarts[what] = now
        s.restarts[what + ":delay"] = delay
        return True

    def supervise_once(self) -> None:
        for s in self.sites:
            if s.pty and s.pty.proc and s.pty.proc.poll() is not None and self._due(s, "pty"):
                log.warning("site %s: socat exited, restarting site", s.slug)
                self._stop_site(s)
                self._start_pty(s)
                self._start_sim(s)
                self._start_bridge(s)
                continue
            if s.sim and s.sim.proc and s.sim.proc.poll() is not None and self._due(s, "sim"):
                log.warning("site %s: simulator exited (%s), restarting", s.slug, s.sim.proc.returncode)
                self._start_sim(s)
            if s.bridge and s.bridge.poll() is not None and self._due(s, "bridge"):
                log.warning("site %s: bridge exited (%s), restarting", s.slug, s.bridge.returncode)
                self._start_bridge(s)

    def _stop_site(self, s: Site) -> None:
        if s.bridge and s.bridge.poll() is None:
            s.bridge.terminate()
            try:
                s.bridge.wait(10)
            except subprocess.TimeoutExpired:
                s.bridge.kill()
                s.bridge.wait()
        if s.sim:
            s.sim.stop()
        if s.pty:
            s.pty.stop()

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping %d sites", len(self.sites))
        for s in self.sites:  # bridges first so they do not see the inverters vanish mid-run
            if s.bridge and s.bridge.poll() is None:
                s.bridge.terminate()
        for s in self.sites:
            self._stop_site(s)

    def run(self) -> None:
        stop = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            self.start()
            while not stop:
                time.sleep(1.0)
                if not stop:
                    self.supervise_once()
        finally:
            self.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nattery_sim.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--root", default="var/sites", help="per-site state directory (default var/sites)")
    p.add_argument("--prefix", default="sim", help="site slug prefix: <prefix>-001, ...")
    p.add_argument("--unit", type=int, default=1)
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument(
        "--time-factor",
        type=time_factor,
        default=os.environ.get(TIME_FACTOR_ENV) or "1",  # a string default goes through ``type``
        help=f"every simulator's time factor (default ${TIME_FACTOR_ENV} or 1; `make run` passes the "
        "environment through), e.g. 720: a simulated day in 2 minutes",
    )
    p.add_argument(
        "--start-time",
        default=os.environ.get(START_TIME_ENV) or None,
        help=f"every simulator's start time (default ${START_TIME_ENV}, else now)",
    )
    p.add_argument("--no-bridge", action="store_true", help="start simulators only")
    p.add_argument("--metrics-base", type=int, default=9200, help="bridge metrics port = base + index; 0 off")
    p.add_argument("--bridge-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--sim-arg", action="append", default=[], help="extra simulator argument (repeatable)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.sites < 1:
        raise SystemExit("--sites must be >= 1")
    Fleet(args).run()


if __name__ == "__main__":
    main()
