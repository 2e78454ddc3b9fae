#!/bin/bash
# Entrypoint for the rabbitmq container: start the node as the image does, then set the `nattery`
# user's password from the environment (definitions.json only carries the development hash).
set -euo pipefail
: "${NATTERY_RABBITMQ_PASSWORD:?NATTERY_RABBITMQ_PASSWORD must be set}"
docker-entrypoint.sh rabbitmq-server &
node_pid=$!
trap 'kill -TERM "$node_pid"; wait "$node_pid"' TERM INT
rabbitmqctl await_startup --timeout 120 >/dev/null
rabbitmqctl change_password nattery "$NATTERY_RABBITMQ_PASSWORD" >/dev/null
touch /tmp/nattery-ready   # the compose healthcheck waits for this
wait "$node_pid"
