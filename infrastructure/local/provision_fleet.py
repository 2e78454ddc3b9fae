"""Register and configure the simulated fleet of `make run` through the gateway, as an operator would.

For each site ``<prefix>-NNN``: create it in device-service (with its safety limits) unless it exists,
register its inverter, and write ``var/sites/<slug>/bridge.env`` with the site's MQTT password (shown
once by the API; rotated if the local file was lost). The simulated fleet's bridges read that file.
Then configure what makes it trade: in trading the battery (the simulator's own size, from
``nattery_sim.fleet.site_params``), an Agile import and Agile Outgoing export tariff and an arbitrage
strategy; in the integration service the site's location and PV array, and once per org an Octopus
connection (region J), whose price job publishes the prices trading plans on. Every step is idempotent.

Every request goes through :class:`RetryingTransport`: a 429 from the gateway's per-address rate limit
is retried after its ``Retry-After``, transient failures (connection errors; 502/503/504 for requests
that may be repeated) with jittered exponential back-off. A site that still cannot be fully provisioned
is named with what failed on stderr, and the exit status is 2 (registered, not fully configured) or 1
(not registered).

    uv run python infrastructure/local/provision_fleet.py --sites 3
    uv run python infrastructure/local/provision_fleet.py --sites 3 --status   # what the fleet is doing
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from nattery_shared.retry import parse_retry_after
from nattery_sim.fleet import site_params

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {
    "soc_min_pct": 10,
    "soc_max_pct": 95,
    "max_charge_w": 5000,
    "max_discharge_w": 5000,
    "battery_temp_min_c": 0,
    "battery_temp_max_c": 50,
    "export_limit_w": 3680,
}
SERVICES = ("user", "device", "trading", "integration")
MARKET = "octopus-agile"  # the integration service's market name for Octopus Agile prices
REGION = "J"  # the bundled Agile prices (and the replay) are region J
IMPORT_PRODUCT = "AGILE-24-10-01"
EXPORT_PRODUCT = "AGILE-OUTGOING-19-05-13"
TARIFFS = {
    "import": {"name": f"Octopus Agile {REGION}", "kind": "dynamic", "market": MARKET, "region": REGION},
    "export": {
        "name": f"Octopus Agile Outgoing {REGION}",
        "kind": "dynamic",
        "market": MARKET,
        "region": REGION,
    },
}


# --- retries -------------------------------------------------------------------------------------------
# Statuses worth another attempt: the gateway's rate limit (the request was refused before it reached a
# service, so any request may be repeated), and, for requests that may be repeated whatever happened
# upstream (GET, PUT, DELETE), a service restarting or slow behind the gateway. A POST is repeated only
# when it certainly did nothing: refused by the rate limit or before the connection was made.
RATE_LIMITED = 429
TRANSIENT = frozenset({502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class _Again(Exception):
    def __init__(self, response: httpx.Response, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after_s = retry_after_s


class RetryingTransport(httpx.BaseTransport):
    """Retries 429 after its ``Retry-After`` and transient failures with jittered exponential back-off
    (tenacity). When the attempts run out, the last answer is returned (the caller reports it) or the
    last transport error raised. ``extensions={"retry": False}`` on a request sends it once."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        *,
        attempts: int = 8,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        jitter_s: float = 0.25,
        max_retry_after_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.jitter_s = jitter_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._on_retry = on_retry

    def close(self) -> None:
        self._inner.close()

    def _wait(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome is not None else None
        jitter = random.uniform(0, self.jitter_s)
        if isinstance(err, _Again) and err.retry_after_s is not None:
            return min(err.retry_after_s, self.max_retry_after_s) + jitter
        backoff = self.backoff_initial_s * 2.0 ** (state.attempt_number - 1)
        return min(self.backoff_max_s, backoff) + jitter

    def _before_sleep(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome is not None else None
        if isinstance(err, _Again):
            err.response.close()  # the answer of the attempt about to be repeated
        if self._on_retry is not None and state.next_action is not None:
            self._on_retry(
                f"{err} (attempt {state.attempt_number}), again in {state.next_action.sleep:.1f} s"
            )

    def _attempt(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        status = response.status_code
        if status == RATE_LIMITED or (status in TRANSIENT and request.method in IDEMPOTENT):
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None and wait > self.max_retry_after_s:
                return response  # not worth waiting for here: reported as it is
            raise _Again(response, wait)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get("retry") is False:
            return self._inner.handle_request(request)
        again: tuple[type[Exception], ...] = (
            (_Again, httpx.TransportError)
            if request.method in IDEMPOTENT
            else (_Again, httpx.ConnectError, httpx.ConnectTimeout)
        )
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.attempts),
                wait=self._wait,
                retry=retry_if_exception_type(again),
                before_sleep=self._before_sleep,
                sleep=self._sleep,
                reraise=True,
            ):
                with attempt:
                    return self._attempt(request)
        except _Again as err:
            return err.response  # out of attempts: the last answer, for the caller to report
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def read_admin(path: Path) -> tuple[str, str]:
    text = path.read_text()
    email = re.search(r"created admin (\S+)", text)
    password = re.search(r"password \(shown once\): (\S+)", text)
    if not (email and password):
        raise SystemExit(f"{path} does not hold the admin login printed by `nattery-user bootstrap-admin`")
    return email.group(1), password.group(1)


def login(client: httpx.Client, email: str, password: str) -> None:
    response = client.post("/api/user/auth/login", json={"email": email, "password": password})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


def write_bridge_env(site_dir: Path, password: str) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    env = site_dir / "bridge.env"
    lines = [f"NATTERY_BRIDGE_MQTT__PASSWORD={password}"]
    lines += [f"NATTERY_BRIDGE_LIMITS__{k.upper()}={v}" for k, v in LIMITS.items()]
    env.write_text("\n".join(lines) + "\n")
    env.chmod(0o600)


class ProvisionError(Exception):
    """A step that failed for good (after the transport's retries), in words for the console."""


def describe(err: BaseException) -> str:
    """One readable line for what failed: the answer's status and detail, or the connection error."""
    if isinstance(err, httpx.HTTPStatusError):
        r = err.response
        return f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text.strip()[:300]}"
    if isinstance(err, httpx.TransportError):
        return f"{type(err).__name__}: {err}"
    return str(err)


def problem(what: str, err: BaseException) -> str:
    """``what: <why>`` for the closing summary (a ProvisionError may already name the step)."""
    text = describe(err)
    return text if text.startswith(f"{what}:") else f"{what}: {text}"


def until_known(call: Any, what: str, wait_s: float = 60.0) -> httpx.Response:
    """Retry a call answered 404 while a service has not yet learnt the site (device.registered is an
    event: trading and integration hear of a new site within a second or two)."""
    deadline = time.monotonic() + wait_s
    while True:
        response: httpx.Response = call()
        if response.status_code != 404 or time.monotonic() > deadline:
            if response.status_code >= 400:
                raise ProvisionError(f"{what}: {response.status_code} {response.text.strip()[:300]}")
            return response
        time.sleep(0.5)


def ensure_tariffs(client: httpx.Client) -> dict[str, str]:
    """The org's Agile import and Outgoing export tariffs (created once), by direction."""
    existing = client.get("/api/trading/tariffs").raise_for_status().json()
    out: dict[str, str] = {}
    for direction, spec in TARIFFS.items():
        found = next((t for t in existing if t["name"] == spec["name"] and t["direction"] == direction), None)
        if found is None:
            found = (
                client.post("/api/trading/tariffs", json={**spec, "direction": direction})
                .raise_for_status()
                .json()
            )
        out[direction] = found["tariff_id"]
    return out


def ensure_octopus_connection(client: httpx.Client) -> str:
    """One Octopus connection per org: the integration service fetches its prices every 2 minutes (from
    NATTERY_INTEGRATION__OCTOPUS__BASE_URL: the replay in `make run`, or the real API)."""
    response = client.get("/api/integration/connections")
    if response.status_code == 404:
        raise ProvisionError("the integration service has no /connections route (yet)")
    for c in response.raise_for_status().json():
        if c["provider"] == "octopus":
            return "octopus connection already there"
    client.post(
        "/api/integration/connections",
        json={
            "provider": "octopus",
            "name": f"Octopus Agile {REGION}",
            "settings": {
                "product_code": IMPORT_PRODUCT,
                "export_product_code": EXPORT_PRODUCT,
                "region": REGION,
            },
        },
    ).raise_for_status()
    return "octopus connection created"


def configure_site(client: httpx.Client, site_id: str, index: int, tariffs: dict[str, str]) -> dict[str, Any]:
    """Battery, tariffs and strategy in trading; returns the site's location and PV array (for
    ``configure_pv``)."""
    p = site_params(index)  # what the fleet's simulator of this site is (same index, same seed)
    battery = {
        "timezone": "Europe/London",
        "capacity_kwh": p["capacity_kwh"],
        "max_charge_kw": LIMITS["max_charge_w"] / 1000,
        "max_discharge_kw": LIMITS["max_discharge_w"] / 1000,
        "soc_min_pct": LIMITS["soc_min_pct"],
        "soc_max_pct": LIMITS["soc_max_pct"],
        "export_limit_kw": LIMITS["export_limit_w"] / 1000,
    }
    until_known(lambda: client.put(f"/api/trading/sites/{site_id}/battery", json=battery), "trading battery")
    for direction, tariff_id in tariffs.items():
        client.put(
            f"/api/trading/sites/{site_id}/tariffs/{direction}", params={"tariff_id": tariff_id}
        ).raise_for_status()
    client.put(
        f"/api/trading/sites/{site_id}/strategy", json={"kind": "arbitrage", "horizon_h": 36}
    ).raise_for_status()
    pv = {
        # around London, a little apart so each site has its own weather point
        "latitude": round(51.50 + 0.05 * index, 4),
        "longitude": round(-0.12 - 0.07 * index, 4),
        "kwp": p["pv_kwp"],
        "tilt_deg": 35,
        "azimuth_deg": 180,
    }
    return pv


def configure_pv(client: httpx.Client, site_id: str, pv: dict[str, Any]) -> str:
    """The site's location and PV array in the integration service (its weather and PV forecast)."""
    until_known(lambda: client.put(f"/api/integration/sites/{site_id}/pv-array", json=pv), "PV array", 20)
    return f"PV array {pv['kwp']} kWp"


def provision(client: httpx.Client, slug: str, root: Path) -> str:
    sites: list[dict[str, Any]] = (
        client.get("/api/device/sites", params={"limit": 1000}).raise_for_status().json()
    )
    site = next((s for s in sites if s["slug"] == slug), None)
    site_dir = root / slug
    if site is None:
        body = {
            "slug": slug,
            "name": f"Simulated site {slug}",
            "timezone": "Europe/London",
            "safety_limits": LIMITS,
        }
        created = client.post("/api/device/sites", json=body).raise_for_status().json()
        write_bridge_env(site_dir, created["mqtt"]["password"])
        site = created
        outcome = "created"
    elif not (site_dir / "bridge.env").exists() or site.get("mqtt_revoked"):
        rotated = client.post(f"/api/device/sites/{site['id']}/credentials/rotate").raise_for_status().json()
        write_bridge_env(site_dir, rotated["mqtt"]["password"])
        outcome = "credentials rotated"
    else:
        outcome = "already provisioned"
    devices = client.get("/api/device/devices", params={"site_id": site["id"]}).raise_for_status().json()
    if not any(d["slug"] == "inverter-1" for d in devices):
        client.post(
            f"/api/device/sites/{site['id']}/devices",
            json={"slug": "inverter-1", "kind": "inverter", "profile": "deye-sunsynk-1ph"},
        ).raise_for_status()
    return f"{site['id']} {outcome}"


def _slot_now(schedule: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    slots: list[dict[str, Any]] = schedule["slots"]
    for slot in slots:
        if datetime.fromisoformat(slot["start_at"]) <= now < datetime.fromisoformat(slot["end_at"]):
            return slot
    return None


def site_status(client: httpx.Client, site: dict[str, Any]) -> tuple[str, bool]:
    """One line about a site (schedule version, planned action now, measured power and SOC) and whether
    it has a schedule and its battery does what the slot plans."""
    now = datetime.now(UTC)
    r = client.get(f"/api/trading/sites/{site['id']}/schedule")
    schedule = r.json() if r.status_code == 200 else None
    measured = ""
    measured_w: float | None = None
    devices = client.get("/api/device/devices", params={"site_id": site["id"]})
    for d in devices.json() if devices.status_code == 200 else []:
        latest = client.get(f"/api/device/devices/{d['id']}/latest")
        values = latest.json().get("values", {}) if latest.status_code == 200 else {}
        if "battery_power_w" in values:
            measured_w = float(values["battery_power_w"])
            soc = values.get("battery_soc_pct")
            measured = f"measured {measured_w / 1000:+.2f} kW" + (
                f", SOC {soc:.1f}%" if soc is not None else ""
            )
    if schedule is None:
        reason = (
            "no schedule yet (waiting for prices)"
            if r.status_code == 404
            else f"schedule: HTTP {r.status_code}"
        )
        return f"{site['slug']}  {reason}; {measured or 'no telemetry yet'}", False
    slot = _slot_now(schedule, now)
    start = schedule.get("forecast", {}).get("initial_state", {}).get("source", "?")
    if slot is None:
        return f"{site['slug']}  schedule v{schedule['version']} has no slot now; {measured}", False
    planned_kw = float(slot["battery_power_kw"])
    line = (
        f"{site['slug']}  schedule v{schedule['version']} (start SOC {start})  now {slot['mode']} "
        f"{planned_kw:+.2f} kW until {slot['end_at'][11:16]}Z  {measured or 'no telemetry yet'}"
    )
    # Following: the measured power has the planned sign and size (self-consumption follows the load).
    following = measured_w is not None and (
        slot["mode"] == "self_consumption"
        or abs(measured_w / 1000 - planned_kw) <= max(0.5, 0.25 * abs(planned_kw))
    )
    return line, following


def status(client: httpx.Client, args: argparse.Namespace) -> int:
    """Print each site's line; with --watch-s, poll until every site has a schedule and follows it."""
    started = time.monotonic()
    slugs = {f"{args.prefix}-{i:03d}" for i in range(1, args.sites + 1)}
    printed: dict[str, str] = {}
    while True:
        sites = [
            s for s in client.get("/api/device/sites", params={"limit": 1000}).json() if s["slug"] in slugs
        ]
        results = {s["slug"]: site_status(client, s) for s in sorted(sites, key=lambda s: s["slug"])}
        done = len(results) == len(slugs) and all(ok for _, ok in results.values())
        elapsed = time.monotonic() - started
        if not args.watch_s or done or elapsed > args.watch_s:
            for line, ok in results.values():
                print(f"    {'ok ' if ok else '.. '}{line}", flush=True)
            if args.watch_s:
                verdict = (
                    f"every site has a schedule and its battery moves as planned ({elapsed:.0f} s)"
                    if done
                    else f"not every site follows a schedule after {elapsed:.0f} s (see the lines above)"
                )
                print(f"  fleet: {verdict}", flush=True)
            return 0 if done or not args.watch_s else 1
        for slug, (line, _) in results.items():  # progress: a line when a site's state changes
            key = line.split("  now ")[0]
            if printed.get(slug) != key:
                printed[slug] = key
                print(f"  fleet: {line}", flush=True)
        time.sleep(5)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--prefix", default="sim")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--admin-file", type=Path, default=ROOT / "var/run/admin.txt")
    parser.add_argument("--root", type=Path, default=ROOT / "var/sites")
    parser.add_argument("--wait-s", type=float, default=180.0, help="how long to wait for the services")
    parser.add_argument("--no-trading", action="store_true", help="register the sites only")
    parser.add_argument("--status", action="store_true", help="print what each site is doing, then exit")
    parser.add_argument(
        "--watch-s",
        type=float,
        default=0.0,
        help="with --status: poll until every site "
        "has a schedule and moves as planned, for at most this long",
    )
    return parser.parse_args(argv)


def wait_ready(client: httpx.Client, wait_s: float) -> bool:
    """Every service ready behind the gateway: each declares its event queues when it connects, and one
    that is not up yet would miss the device.registered of the sites created now."""
    deadline = time.monotonic() + wait_s
    while True:
        try:  # probes are not retried by the transport: this loop is their retry
            if all(
                client.get(f"/api/{s}/readyz", extensions={"retry": False}).status_code == 200
                for s in SERVICES
            ):
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def provision_fleet(client: httpx.Client, args: argparse.Namespace) -> dict[str, list[str]]:
    """Register and configure every site; returns what failed, per site (empty: all done)."""
    failed: dict[str, list[str]] = {}
    sites: list[tuple[int, str, str]] = []
    for i in range(1, args.sites + 1):
        slug = f"{args.prefix}-{i:03d}"
        try:
            site_id, outcome = provision(client, slug, args.root).split(" ", 1)
        except (ProvisionError, httpx.HTTPError) as err:
            failed[slug] = [problem("registration", err)]
            continue
        print(f"provision_fleet: {slug}: {outcome}", flush=True)
        sites.append((i - 1, slug, site_id))
    if args.no_trading or not sites:
        return failed
    try:
        tariffs = ensure_tariffs(client)
    except (ProvisionError, httpx.HTTPError) as err:
        for _, slug, _ in sites:
            failed.setdefault(slug, []).append(problem("tariffs", err))
        return failed
    arrays: dict[str, dict[str, Any]] = {}
    for index, slug, site_id in sites:
        try:
            arrays[slug] = configure_site(client, site_id, index, tariffs)
        except (ProvisionError, httpx.HTTPError) as err:
            failed.setdefault(slug, []).append(problem("battery, tariffs or strategy", err))
            continue
        print(f"provision_fleet: {slug}: battery, Agile tariffs, arbitrage strategy", flush=True)
    try:
        print(f"provision_fleet: {ensure_octopus_connection(client)}", flush=True)
    except (ProvisionError, httpx.HTTPError) as err:  # no prices: no site of the org trades
        for _, slug, _ in sites:
            failed.setdefault(slug, []).append(problem("Octopus connection (prices)", err))
    for _, slug, site_id in sites:
        if slug not in arrays:
            continue
        try:
            print(f"provision_fleet: {slug}: {configure_pv(client, site_id, arrays[slug])}", flush=True)
        except (ProvisionError, httpx.HTTPError) as err:
            failed.setdefault(slug, []).append(problem("PV array", err))
    return failed


def run(client: httpx.Client, args: argparse.Namespace, email: str, password: str) -> int:
    if not wait_ready(client, args.wait_s):
        print("provision_fleet: the services are not ready", file=sys.stderr)
        return 1
    try:
        login(client, email, password)
    except httpx.HTTPError as err:
        print(f"provision_fleet: cannot log in as {email}: {describe(err)}", file=sys.stderr)
        return 1
    if args.status:
        return status(client, args)
    failed = provision_fleet(client, args)
    if not failed:
        return 0
    print(
        f"provision_fleet: {len(failed)} of {args.sites} simulated sites not fully provisioned:",
        file=sys.stderr,
    )
    for slug, problems in sorted(failed.items()):
        for problem in problems:
            print(f"provision_fleet:   {slug}: {problem}", file=sys.stderr)
    # 1: a site is not even registered (no bridge can connect); 2: registered, not fully configured
    return 1 if any(p.startswith("registration:") for ps in failed.values() for p in ps) else 2


def retrying_client(gateway: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    def say(what: str) -> None:
        print(f"provision_fleet: retrying: {what}", file=sys.stderr, flush=True)

    return httpx.Client(base_url=gateway, timeout=10, transport=RetryingTransport(transport, on_retry=say))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    email, password = read_admin(args.admin_file)
    with retrying_client(args.gateway) as client:
        return run(client, args, email, password)


if __name__ == "__main__":
    sys.exit(main())
