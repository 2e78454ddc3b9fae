#!/bin/sh
# Entrypoint for the compose broker (eclipse-mosquitto:2).
# 1. Creates the password file with the device-service account on first start.
# 2. Runs mosquitto and sends it SIGHUP whenever device-service rewrites the password file on the shared
#    `mosquitto-auth` volume (containers cannot signal each other; locally device-service sends SIGHUP
#    itself using var/mosquitto/mosquitto.pid).
set -eu
: "${NATTERY_MQTT_DEVICE_PASSWORD:?NATTERY_MQTT_DEVICE_PASSWORD must be set}"
passwd=/mosquitto/auth/passwd
# device-service runs as uid 10001 (services/*/Dockerfile) and rewrites the password file; the broker
# drops to user `mosquitto` and reads it through the group (setgid directory, files 0640).
DEVICE_SERVICE_UID=10001
mkdir -p /mosquitto/auth /mosquitto/data
chown -R mosquitto:mosquitto /mosquitto/data
chown "$DEVICE_SERVICE_UID:mosquitto" /mosquitto/auth
chmod 2770 /mosquitto/auth
if [ ! -s "$passwd" ]; then
  touch "$passwd"
  mosquitto_passwd -b "$passwd" device-service "$NATTERY_MQTT_DEVICE_PASSWORD"
  chown "$DEVICE_SERVICE_UID:mosquitto" "$passwd"
  chmod 0640 "$passwd"
fi
mosquitto -c /mosquitto/config/mosquitto.conf &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"; exit 0' TERM INT
# mtime, size and inode: an atomic replace (write + rename) changes the inode even within a second.
last=$(stat -c '%Y %s %i' "$passwd")
while kill -0 "$pid" 2>/dev/null; do
  sleep 2
  now=$(stat -c '%Y %s %i' "$passwd" 2>/dev/null || echo "$last")
  if [ "$now" != "$last" ]; then
    last=$now
    kill -HUP "$pid"
  fi
done
wait "$pid"
