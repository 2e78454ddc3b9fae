"""Register the simulated fleet of `make run` through the gateway, as an operator would.

For each site ``<prefix>-NNN``: create it in device-service (with its safety limits) unless it exists,
register its inverter, and write ``var/sites/<slug>/bridge.env`` with the site's MQTT password (shown
once by the API; rotated if the local file was lost). The simulated fleet's bridges read that file.

    uv run python infrastructure/local/provision_fleet.py --sites 3
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

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
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--prefix", default="sim")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--admin-file", type=Path, default=ROOT / "var/run/admin.txt")
    parser.add_argument("--root", type=Path, default=ROOT / "var/sites")
    parser.add_argument("--wait-s", type=float, default=180.0, help="how long to wait for the services")
    args = parser.parse_args()

    email, password = read_admin(args.admin_file)
    with httpx.Client(base_url=args.gateway, timeout=10) as client:
        deadline = time.monotonic() + args.wait_s
        while True:
            try:
                if all(client.get(f"/api/{s}/readyz").status_code == 200 for s in ("user", "device")):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                print("provision_fleet: user and device services not ready", file=sys.stderr)
                return 1
            time.sleep(1)
        login(client, email, password)
        for i in range(1, args.sites + 1):
            slug = f"{args.prefix}-{i:03d}"
            print(f"provision_fleet: {slug}: {provision(client, slug, args.root)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
