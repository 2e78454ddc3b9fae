#!/usr/bin/env bash
# `make run`: migrate, bootstrap the first admin, then run every service, the gateway and the simulated
# fleet under honcho (Procfile). Prints the URLs and "all services ready" once every service's /readyz
# answers 200 through the gateway. Ctrl-C stops everything this script started; the infrastructure
# (setup.sh) keeps running until `make stop`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUN_DIR="$ROOT/var/run"
mkdir -p "$RUN_DIR" var/log
SERVICES=(device trading analytics user integration)
GATEWAY=http://127.0.0.1:8080

log() { printf '[run] %s\n' "$*"; }

for svc in "${SERVICES[@]}"; do
  log "migrating $svc"
  uv run --no-sync "nattery-$svc" migrate
done

# First admin: the command prints the login it created (or that one exists); keep it for the banner.
admin_file="$RUN_DIR/admin.txt"
admin_created=0
if admin_out="$(uv run --no-sync nattery-user bootstrap-admin 2>/dev/null)"; then
  # Keep the login only when it was just created: later runs print "already exists" and no password.
  if [[ "$admin_out" == *"created admin"* ]]; then
    admin_created=1
    umask 077
    printf '%s\n' "$admin_out" >"$admin_file"
    umask 022
  else
    log "$admin_out (its login is in $admin_file from the first run)"
  fi
else
  log "nattery-user bootstrap-admin is not available (yet); no admin created"
  rm -f "$admin_file"
fi

# The Procfile, minus the fleet (or the provider replay) while its module does not exist.
procfile="$RUN_DIR/Procfile"
drop=(-e '^#')
fleet=1
if [ ! -f edge/inverter-sim/src/nattery_sim/fleet.py ]; then
  log "edge/inverter-sim/src/nattery_sim/fleet.py does not exist yet: running without the simulated fleet"
  drop+=(-e '^fleet:')
  fleet=0
fi
if [ ! -f services/integration/src/nattery_integration/replay/__main__.py ]; then
  log "the provider replay (nattery_integration.replay) does not exist yet: no price feed"
  drop+=(-e '^replay:')
fi
grep -v "${drop[@]}" Procfile >"$procfile"
octopus_url="${NATTERY_INTEGRATION__OCTOPUS__BASE_URL:-}"
if [ -n "$octopus_url" ]; then
  prices="Octopus Agile from $octopus_url (NATTERY_INTEGRATION__OCTOPUS__BASE_URL)"
else
  prices="REPLAY of the bundled Agile prices (region J) on today's dates, http://127.0.0.1:8099/octopus/v1/"
fi

# The gateway runs in the foreground under honcho: stop the one setup.sh daemonised.
nginx_pid="$ROOT/var/nginx/logs/nginx.pid"
if [ -s "$nginx_pid" ] && kill -0 "$(cat "$nginx_pid")" 2>/dev/null; then
  nginx -p var/nginx -e logs/error.log -c conf/nginx.conf -s quit
  for _ in $(seq 50); do [ -s "$nginx_pid" ] || break; sleep 0.1; done
fi

wait_ready() {
  local svc pending
  while :; do
    pending=()
    for svc in "${SERVICES[@]}"; do
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$GATEWAY/api/$svc/readyz" || true)"
      [ "$code" = 200 ] || pending+=("$svc")
    done
    [ "${#pending[@]}" -eq 0 ] && break
    sleep 1
  done
  cat <<BANNER

  ================================================================
  Nattery is running
    gateway       $GATEWAY/api/{device,trading,analytics,user,integration}/
    services      http://127.0.0.1:3001 ... 3005  (/docs on each)
    mosquitto     mqtt://127.0.0.1:1884, mqtts://127.0.0.1:8884 (var/mosquitto/certs/ca.crt)
    influxdb      http://127.0.0.1:8086 (database nattery)
    rabbitmq      amqp://nattery:nattery-dev@127.0.0.1:5672/nattery
    postgres      postgresql://nattery:nattery-dev@127.0.0.1:5432/nattery
    prices        $prices
BANNER
  if [ "$admin_created" = 1 ]; then
    echo "    admin login (printed once; kept for the simulated fleet in $admin_file, mode 600):"
    sed 's/^/      /' "$admin_file"
  elif [ -s "$admin_file" ]; then
    echo "    admin login   created on the first run: $admin_file"
  fi
  printf '  ================================================================\n  all services ready (Ctrl-C stops them)\n\n'
  # Each simulated site: its schedule, what it should do now and what its battery does (polls the APIs
  # until every site follows a schedule, at most 3 minutes; prices arrive within the integration
  # service's 2-minute price job).
  if [ "$fleet" = 1 ] && [ -s "$admin_file" ]; then
    echo "  fleet: waiting for each simulated site's schedule (prices, plan, set_schedule, battery)"
    uv run --no-sync python infrastructure/local/provision_fleet.py --sites "${NATTERY_FLEET_SITES:-3}" \
      --status --watch-s 180 || true
  fi
}

wait_ready &
watcher=$!
echo "$$" >"$RUN_DIR/run.pid"

uv run --no-sync honcho -f "$procfile" -d "$ROOT" start &
honcho=$!
echo "$honcho" >"$RUN_DIR/honcho.pid"

cleanup() {
  trap - INT TERM EXIT
  kill "$watcher" 2>/dev/null || true
  if kill -0 "$honcho" 2>/dev/null; then
    kill -TERM "$honcho" 2>/dev/null || true
    wait "$honcho" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/honcho.pid" "$RUN_DIR/run.pid"
}
trap cleanup INT TERM EXIT
wait "$honcho"
