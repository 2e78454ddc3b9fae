#!/bin/sh
# Runs once, on the first start of the postgres container (/docker-entrypoint-initdb.d/).
# Passes the real password to init.sql and skips the test database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v nattery_password="$NATTERY_POSTGRES_PASSWORD" -v skip_test_db=1 \
  -f /nattery/init.sql
