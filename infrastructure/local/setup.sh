#!/usr/bin/env bash
# Nattery local infrastructure: idempotent, safe to re-run, used by `make run` and `make test`.
#
# 1. Installs with apt whatever is missing (apt-get update only when something must be installed).
# 2. Starts the machine's shared servers if they are not listening (PostgreSQL 5432, Redis 6379,
#    RabbitMQ 5672) and leaves running ones alone; creates Nattery's role, databases, schemas, vhosts,
#    user and exchanges in them.
# 3. Runs the project's OWN instances, state under var/ (never reconfigures the machine's servers):
#    Mosquitto 127.0.0.1:1884 (plain) + 8884 (TLS), InfluxDB 127.0.0.1:8086, nginx gateway 127.0.0.1:8080.
#
# On an already set-up machine this only checks ports and versions of rendered configs (~1 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="$ROOT/var"
INFRA="$ROOT/infrastructure"
LOG="$VAR/log"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_open "$1" && return 0
    sleep 0.1
  done
  die "$3 did not start listening on 127.0.0.1:$1 within $2 s"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------------------------------
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in \
    pg_ctlcluster:postgresql psql:postgresql redis-server:redis-server rabbitmq-server:rabbitmq-server \
    mosquitto:mosquitto mosquitto_passwd:mosquitto mosquitto_pub:mosquitto-clients influxd:influxdb \
    nginx:nginx-light socat:socat mbpoll:mbpoll docker-compose:docker-compose openssl:openssl envsubst:gettext-base \
    curl:curl cc:gcc; do
    cmd="${pair%%:*}"
    pkg="${pair#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
      [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
  done
  # Headers for building the broker plugin (infrastructure/mosquitto/plugin/).
  [ -f /usr/include/mosquitto_plugin.h ] || missing+=(mosquitto-dev)
  [ -f /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  export PATH="$PATH:/usr/sbin:/sbin"
}

# ---------------------------------------------------------------------------------------------------
# 2. The machine's shared servers
# ---------------------------------------------------------------------------------------------------
ensure_postgres() {
  if ! port_open 5432; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port 5432 30 PostgreSQL
  fi
  # Superuser over TCP (trust on this machine); fall back to peer auth as the postgres OS user.
  local psql_args=(-v ON_ERROR_STOP=1 -q -f "$INFRA/postgres/init.sql")
  if ! PGOPTIONS='-c client_min_messages=warning' psql -X -U postgres -h 127.0.0.1 -d postgres \
    "${psql_args[@]}" >/dev/null 2>"$LOG/postgres-init.err"; then
    if command -v runuser >/dev/null && [ "$(id -u)" -eq 0 ]; then
      PGOPTIONS='-c client_min_messages=warning' runuser -u postgres -- psql -X -d postgres \
        -v ON_ERROR_STOP=1 -q -f - <"$INFRA/postgres/init.sql" >/dev/null
    elif command -v sudo >/dev/null; then
      sudo -u postgres env PGOPTIONS='-c client_min_messages=warning' psql -X -d postgres \
        -v ON_ERROR_STOP=1 -q -f - <"$INFRA/postgres/init.sql" >/dev/null
    else
      cat "$LOG/postgres-init.err" >&2
      die "could not run infrastructure/postgres/init.sql as the postgres superuser"
    fi
  fi
}

ensure_redis() {
  if ! port_open 6379; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 6379 15 Redis
  fi
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 90 RabbitMQ
    as_root rabbitmqctl -q await_startup --timeout 60 >/dev/null
  fi
  # One quick check; import the definitions (vhosts, user, permissions, exchanges) only when needed.
  local perms
  perms="$(as_root rabbitmqctl -q list_user_permissions nattery 2>/dev/null || true)"
  if ! grep -q '^nattery[[:space:]]' <<<"$perms" || ! grep -q '^nattery_test[[:space:]]' <<<"$perms"; then
    log "importing RabbitMQ definitions (vhosts nattery, nattery_test; user nattery)"
    # The broker reads the file itself: give it a copy it can surely read.
    local defs
    defs="$(mktemp /tmp/nattery-rabbitmq-defs.XXXXXX.json)"
    cp "$INFRA/rabbitmq/definitions.json" "$defs"
    chmod 644 "$defs"
    as_root rabbitmqctl -q import_definitions "$defs" >/dev/null
    rm -f "$defs"
    sleep 1 # the import is asynchronous
  fi
}

# ---------------------------------------------------------------------------------------------------
# 3. The project's own instances
# ---------------------------------------------------------------------------------------------------

# render <template> <dest> <sed args...>: writes dest only when the content changes.
# Returns 0 when the file changed, 1 when it was already up to date.
render() {
  local template="$1" dest="$2" tmp
  shift 2
  tmp="$(mktemp)"
  sed "$@" "$template" >"$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$dest"
  chmod 644 "$dest"
  return 0
}

# stop_pid <pidfile> <what>: stops a project instance that runs with an outdated config.
stop_pid() {
  local pidfile="$1" i pid
  pid_alive "$pidfile" || return 0
  pid="$(cat "$pidfile")"
  log "restarting $2 (configuration changed)"
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
}

# pids of the processes listening on 127.0.0.1:<port> (nginx: master and workers).
listener_pids() {
  ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un
}

# A port held by something that is not our instance is a conflict we must not paper over, except
# when it is a Nattery instance this checkout does not track (its command line names a .../var/<what>/
# directory: another checkout's, or an orphan whose pid file was deleted with var/): then that one is
# stopped and ours takes over, so a fresh clone (CI) never talks to a broker reading another
# checkout's password file.
check_port_owner() { # port pidfile what
  local pid cmdline i
  if port_open "$1" && ! pid_alive "$2"; then
    for pid in $(listener_pids "$1"); do
      cmdline="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)" # a worker may be gone
      # Another checkout's instance, or an orphan of this one whose var/ was deleted (no pid file).
      if [[ "$cmdline" =~ /var/(mosquitto|influxdb|nginx) ]]; then
        log "stopping a $3 this checkout does not track (pid $pid: $cmdline)"
        kill "$pid" 2>/dev/null || true
        # Wait for the process, not just the port: influxd closes its listener first and deletes its
        # pid file last, and an orphan of this checkout has the same pid file path as the one we start.
        for ((i = 0; i < 200; i++)); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
    for ((i = 0; i < 50; i++)); do
      port_open "$1" || return 0
      sleep 0.1
    done
    die "127.0.0.1:$1 is in use by another program, not the project's $3 (pid file $2)"
  fi
}

ensure_mosquitto_certs() {
  local certs="$VAR/mosquitto/certs"
  [ -s "$certs/server.crt" ] && [ -s "$certs/ca.crt" ] && return 0
  log "generating a self-signed CA and server certificate in var/mosquitto/certs/"
  mkdir -p "$certs"
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=Nattery development CA" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext
    chmod 600 ca.key server.key
  )
}

# The site-guard plugin (client ids in the site's namespace, no shared subscriptions for sites):
# rebuilt when its source is newer than the library. Returns 0 when it was (re)built.
build_site_guard() {
  local src="$INFRA/mosquitto/plugin/nattery_site_guard.c" so="$VAR/mosquitto/nattery_site_guard.so"
  if [ -s "$so" ] && [ "$so" -nt "$src" ]; then return 1; fi
  log "building the Mosquitto plugin var/mosquitto/nattery_site_guard.so"
  cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$so.tmp" "$src" || die "cannot build $src"
  mv "$so.tmp" "$so"
  return 0
}

ensure_mosquitto() {
  local dir="$VAR/mosquitto" pidfile="$VAR/mosquitto/mosquitto.pid" changed=0
  mkdir -p "$dir/data" "$LOG"
  ensure_mosquitto_certs
  # A plugin is loaded once at start: a new build needs a restart, not a SIGHUP.
  build_site_guard && changed=1
  if [ ! -s "$dir/passwd" ]; then
    touch "$dir/passwd"
    chmod 600 "$dir/passwd"
  fi
  if ! grep -q '^device-service:' "$dir/passwd"; then
    mosquitto_passwd -b "$dir/passwd" device-service nattery-dev
    if pid_alive "$pidfile"; then kill -HUP "$(cat "$pidfile")"; fi
  fi
  render "$INFRA/mosquitto/mosquitto.conf.template" "$dir/mosquitto.conf" \
    -e "s|@ROOT@|$ROOT|g" -e "s|@USER@|$(id -un)|g" && changed=1
  if [ "$changed" = 1 ]; then stop_pid "$pidfile" Mosquitto; fi
  check_port_owner 1884 "$pidfile" Mosquitto
  if ! port_open 1884; then
    log "starting Mosquitto on 127.0.0.1:1884 (plain) and 8884 (TLS)"
    mosquitto -c "$dir/mosquitto.conf" -d 2>>"$LOG/mosquitto.log"
    wait_port 1884 10 Mosquitto
    wait_port 8884 10 "Mosquitto (TLS)"
  fi
}

influx_query() { # q  (admin statements go as POST)
  curl -fsS -XPOST "http://127.0.0.1:8086/query" --data-urlencode "q=$1"
}

ensure_influxdb() {
  local dir="$VAR/influxdb" pidfile="$VAR/influxdb/influxd.pid" changed=0 i
  mkdir -p "$dir" "$LOG"
  render "$INFRA/influxdb/influxdb.conf" "$dir/influxdb.conf" -e "s|@ROOT@|$ROOT|g" && changed=1
  if [ "$changed" = 1 ]; then stop_pid "$pidfile" InfluxDB; fi
  check_port_owner 8086 "$pidfile" InfluxDB
  if ! port_open 8086; then
    port_open 8088 && die "127.0.0.1:8088 (InfluxDB RPC) is in use by another program"
    log "starting InfluxDB on 127.0.0.1:8086"
    nohup influxd -config "$dir/influxdb.conf" -pidfile "$pidfile" >>"$LOG/influxdb.log" 2>&1 &
    for ((i = 0; i < 300; i++)); do
      curl -fsS -o /dev/null "http://127.0.0.1:8086/ping" 2>/dev/null && break
      sleep 0.1
    done
    curl -fsS -o /dev/null "http://127.0.0.1:8086/ping" || die "InfluxDB did not answer /ping (see var/log/influxdb.log)"
  fi
  local databases
  databases="$(influx_query 'SHOW DATABASES')"
  if [[ "$databases" != *'"nattery"'* ]]; then
    log "creating InfluxDB database nattery (autogen, 400d)"
    influx_query 'CREATE DATABASE "nattery" WITH DURATION 400d REPLICATION 1 NAME "autogen"' >/dev/null
  fi
  if [[ "$databases" != *'"nattery_test"'* ]]; then
    log "creating InfluxDB database nattery_test (autogen, 7d)"
    influx_query 'CREATE DATABASE "nattery_test" WITH DURATION 7d REPLICATION 1 NAME "autogen"' >/dev/null
  fi
}

ensure_nginx() {
  local dir="$VAR/nginx" pidfile="$VAR/nginx/logs/nginx.pid" changed=0 user_directive=""
  mkdir -p "$dir/conf/nattery" "$dir/logs" "$dir/temp"
  # As root, workers would default to `nobody`, who cannot write var/nginx/temp: keep our own user.
  [ "$(id -u)" -eq 0 ] && user_directive="user root;"
  render "$INFRA/nginx/local.conf.template" "$dir/conf/nginx.conf" \
    -e "s|@USER_DIRECTIVE@|$user_directive|" && changed=1

  local tmp
  tmp="$(mktemp)"
  NATTERY_DEVICE_UPSTREAM="${NATTERY_DEVICE_UPSTREAM:-127.0.0.1:3001}" \
    NATTERY_TRADING_UPSTREAM="${NATTERY_TRADING_UPSTREAM:-127.0.0.1:3002}" \
    NATTERY_ANALYTICS_UPSTREAM="${NATTERY_ANALYTICS_UPSTREAM:-127.0.0.1:3003}" \
    NATTERY_USER_UPSTREAM="${NATTERY_USER_UPSTREAM:-127.0.0.1:3004}" \
    NATTERY_INTEGRATION_UPSTREAM="${NATTERY_INTEGRATION_UPSTREAM:-127.0.0.1:3005}" \
    NATTERY_DASHBOARD_ORIGIN="${NATTERY_DASHBOARD_ORIGIN:-http://localhost:3000}" \
    envsubst '${NATTERY_DEVICE_UPSTREAM} ${NATTERY_TRADING_UPSTREAM} ${NATTERY_ANALYTICS_UPSTREAM} ${NATTERY_USER_UPSTREAM} ${NATTERY_INTEGRATION_UPSTREAM} ${NATTERY_DASHBOARD_ORIGIN}' \
    <"$INFRA/nginx/nattery-http.conf.template" >"$tmp"
  render "$tmp" "$dir/conf/nattery-http.conf" -e '' && changed=1
  rm -f "$tmp"
  local f
  for f in headers.conf locations.conf; do
    render "$INFRA/nginx/nattery/$f" "$dir/conf/nattery/$f" -e '' && changed=1
  done

  local nginx_cmd=(nginx -p "$dir" -e logs/error.log -c conf/nginx.conf)
  if [ "$changed" = 1 ]; then
    "${nginx_cmd[@]}" -t -q || die "generated nginx config is invalid (var/nginx/conf/)"
    if pid_alive "$pidfile"; then
      log "reloading the gateway (configuration changed)"
      "${nginx_cmd[@]}" -s reload
      return 0
    fi
  fi
  # `make run` runs the gateway in the foreground under honcho; setup leaves that one alone too.
  check_port_owner 8080 "$pidfile" "nginx gateway"
  if ! port_open 8080; then
    log "starting the nginx gateway on 127.0.0.1:8080"
    "${nginx_cmd[@]}"
    wait_port 8080 10 "nginx gateway"
  fi
}

main() {
  mkdir -p "$LOG"
  ensure_packages
  ensure_postgres
  ensure_redis
  ensure_rabbitmq
  ensure_mosquitto
  ensure_influxdb
  ensure_nginx
  if [ "${1-}" != "--quiet" ]; then
    log "infrastructure ready: postgres 5432, redis 6379, rabbitmq 5672, mosquitto 1884/8884 (TLS)," \
      "influxdb 8086, gateway http://127.0.0.1:8080"
  fi
}

main "$@"
