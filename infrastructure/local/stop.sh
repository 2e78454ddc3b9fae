#!/usr/bin/env bash
# `make stop`: stops what `make run` started and the project's own instances (Mosquitto 1884/8884,
# InfluxDB 8086, nginx 8080), by their pid files. The machine's shared PostgreSQL, Redis and RabbitMQ
# are left running.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

log() { printf '[stop] %s\n' "$*"; }

stop_pidfile() { # pidfile what [signal]
  local pidfile="$1" what="$2" sig="${3:-TERM}" pid i
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $what (pid $pid)"
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { log "$what did not stop, killing"; kill -KILL "$pid" 2>/dev/null; }
  fi
  rm -f "$pidfile"
}

# make run: honcho stops its children (services, gateway, fleet) on TERM.
stop_pidfile var/run/honcho.pid "honcho (make run)"
stop_pidfile var/run/run.pid "run.sh"
stop_pidfile var/nginx/logs/nginx.pid "nginx gateway" QUIT
stop_pidfile var/influxdb/influxd.pid "InfluxDB"
stop_pidfile var/mosquitto/mosquitto.pid "Mosquitto"
