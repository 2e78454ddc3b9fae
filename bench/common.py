"""What every benchmark script shares: one way to print a figure, one percentile.

A benchmark prints one JSON object per line on stdout, and nothing else there (progress goes to stderr):

    {"name": "device.ingest_msgs_per_s", "value": 8123, "unit": "msg/s", "target": ">= 10000",
     "reference": "ThingsBoard single server ...", ...extra fields}

``reference`` says what the figure is compared with (a published figure, a physical limit, a ceiling
measured on this machine); ``target`` is the bar it must clear, when there is one.

Scripts in bench/ import this as ``from common import emit, percentile`` (the script's folder is first on
``sys.path`` when run as ``python bench/x.py``).

Benchmarks that run our services as real processes start, watch and stop them with
:class:`ServiceProcess` (output in ``var/log/<log_name>.log``, ready when ``/readyz`` answers 200, an
exit while waiting raises and names the log, SIGTERM then SIGKILL), and read their CPU with
:func:`proc_cpu_s` / :func:`children`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "ServiceProcess",
    "children",
    "emit",
    "note",
    "percentile",
    "proc_cpu_s",
    "stop_all",
]

REPO = Path(__file__).resolve().parents[1]


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: a non-finite float becomes the string "inf", "-inf" or "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def emit(
    name: str,
    value: float | int | None,
    unit: str,
    *,
    reference: str,
    target: str | None = None,
    **extra: Any,
) -> None:
    """Print one figure as one JSON line: name, value, unit, target, reference, then ``extra``.

    ``value`` is None when the figure could not be measured (say why in an extra field); an infinite
    value (a probe that never landed) is printed as the string "inf".
    """
    record = {"name": name, "value": value, "unit": unit, "target": target, "reference": reference}
    clash = record.keys() & extra.keys()
    if clash:
        raise ValueError(f"extra fields shadow the standard ones: {sorted(clash)}")
    record.update(extra)
    print(json.dumps(_finite(record), allow_nan=False), flush=True)


def note(bench: str, message: str) -> None:
    """Progress for a human, on stderr (stdout carries only the JSON lines)."""
    print(f"[{bench}] {message}", file=sys.stderr, flush=True)


def percentile(values: Iterable[float], pct: float, *, missing: int = 0) -> float:
    """Nearest-rank percentile: the smallest value with at least ``pct`` % of the values at or below it.

    ``missing`` samples that never completed (a probe that never landed, a request that never
    answered) count as infinite, so enough of them make the percentile infinite rather than vanish.
    Raises ValueError on no samples at all or ``pct`` outside (0, 100].
    """
    if not 0 < pct <= 100:
        raise ValueError(f"pct must be in (0, 100], got {pct}")
    ordered = sorted(values) + [math.inf] * missing
    if not ordered:
        raise ValueError("percentile of no samples")
    rank = math.ceil(pct / 100 * len(ordered))  # 1-based
    return ordered[max(1, rank) - 1]


# --- our services as real processes -----------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (a multi-process server's workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in children(k)]


class ServiceProcess:
    """One process of ours under a benchmark, e.g.
    ``ServiceProcess([sys.executable, "-m", "nattery_integration", "serve"], env, "bench-integration",
    port=port)``: ``start()``, ``await wait_ready()``, then ``stop()`` (also on errors: use it as a
    context manager). stdout and stderr go to ``var/log/<log_name>.log`` (appended)."""

    def __init__(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str],
        log_name: str,
        *,
        port: int | None = None,
        stop_timeout_s: float = 20.0,
    ) -> None:
        self.cmd = list(cmd)
        self.env = dict(env)
        self.log_name = log_name
        self.port = port
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return REPO / "var/log" / f"{self.log_name}.log"

    @property
    def base_url(self) -> str:
        assert self.port is not None, "a process without a port has no URL"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=out, cwd=REPO)
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def check_running(self) -> None:
        if self.exited():
            assert self.proc is not None
            raise RuntimeError(
                f"{self.log_name} exited with {self.proc.returncode} (see {self.log_path.relative_to(REPO)})"
            )

    async def wait_ready(
        self, *, timeout_s: float = 60.0, also: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Until ``GET /readyz`` answers 200 (and ``also()`` is true, when given)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as http:
            while time.monotonic() < deadline:
                self.check_running()
                try:
                    if (await http.get("/readyz")).status_code == 200 and (also is None or await also()):
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.log_name} not ready within {timeout_s:g} s (see {self.log_path})")

    def cpu_s(self) -> float:
        """CPU seconds of the process and its children so far."""
        return sum(proc_cpu_s(p) for p in [self.pid, *children(self.pid)])

    def terminate(self) -> None:
        """SIGTERM, without waiting (see :func:`stop_all`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout_s``; a no-op when not started or already gone."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            note("bench", f"{self.log_name} did not stop on SIGTERM within {self.stop_timeout_s:g} s: killed")
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def stop_all(processes: Iterable[ServiceProcess | None]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after its timeout)."""
    alive = [p for p in processes if p is not None]
    for p in alive:
        p.terminate()
    for p in alive:
        p.stop()


# Durable queues of the services that the fleet benches fill on the test vhost without consuming them
# (device-service is not running there): 10,000 schedule.published events left in device.schedules made
# the next test session's device consumer spend minutes refusing them, and its tests time out.
SERVICE_QUEUES_FILLED_BY_BENCHES = ("device.schedules", "device.commands", "integration.sites")


async def purge_service_queues(
    connection: Any, names: Sequence[str] = SERVICE_QUEUES_FILLED_BY_BENCHES
) -> None:
    """Purge what a benchmark published into other services' queues on ``connection`` (an aio-pika
    connection to the test vhost); absent queues are skipped."""
    for name in names:
        channel = await connection.channel()  # a failed passive declare closes its channel
        try:
            queue = await channel.declare_queue(name, passive=True)
        except Exception:
            continue
        purged = await queue.purge()
        count = getattr(purged, "message_count", 0) or 0
        if count:
            note("bench", f"purged {count} messages the benchmark left in {name}")
        await channel.close()


async def consumer_count(connection: Any, queue_name: str) -> int:
    """How many consumers ``queue_name`` has (0 while it does not exist): the benches wait on it until
    the services they started are consuming."""
    channel = await connection.channel()  # a failed passive declare closes its channel
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
    except Exception:
        return 0
    count: int = queue.declaration_result.consumer_count or 0
    await channel.close()
    return count
