#!/usr/bin/env bash
# The `fleet` process of `make run`: once the services answer, register the simulated sites through the
# gateway (provision_fleet.py writes each site's MQTT password to var/sites/<slug>/bridge.env) and
# configure them for trading (battery, Agile tariffs, strategy, PV array, an Octopus connection), then
# run the simulators and bridges (nattery_sim.fleet). NATTERY_FLEET_SITES sets the fleet size (default 3).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SITES="${NATTERY_FLEET_SITES:-3}"
uv run --no-sync python infrastructure/local/provision_fleet.py --sites "$SITES"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then  # 2: registered, not configured for trading
  echo "fleet: could not register the simulated sites; running the simulators without bridges" >&2
  exec uv run --no-sync python -m nattery_sim.fleet --sites "$SITES" --no-bridge
fi
if [ "$rc" -eq 2 ]; then
  echo "fleet: not every simulated site is fully configured (provision_fleet named them above); running them anyway" >&2
fi
export NATTERY_BRIDGE_MQTT__HOST=127.0.0.1 NATTERY_BRIDGE_MQTT__PORT=1884
exec uv run --no-sync python -m nattery_sim.fleet --sites "$SITES"
