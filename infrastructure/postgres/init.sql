-- Nattery PostgreSQL bootstrap. Idempotent: safe to run on every `make run` / `make test`.
-- Run as a superuser with psql (it uses \gexec, \if and \connect):
--   psql -U postgres -v ON_ERROR_STOP=1 -f infrastructure/postgres/init.sql
-- Variables (psql -v):
--   nattery_password  password of the `nattery` role (default: nattery-dev, development only)
--   skip_test_db      when set, `nattery_test` is not created (production, compose)

\if :{?nattery_password}
\else
\set nattery_password 'nattery-dev'
\endif

SELECT 'CREATE ROLE nattery' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nattery') \gexec
ALTER ROLE nattery WITH LOGIN CREATEDB PASSWORD :'nattery_password';

SELECT 'CREATE DATABASE nattery OWNER nattery'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'nattery') \gexec
ALTER DATABASE nattery OWNER TO nattery;

-- One schema per service (ARCHITECTURE.md §6); each service migrates its own.
\connect nattery
CREATE SCHEMA IF NOT EXISTS device AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS trading AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS analytics AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS users AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS integration AUTHORIZATION nattery;
ALTER SCHEMA device OWNER TO nattery;
ALTER SCHEMA trading OWNER TO nattery;
ALTER SCHEMA analytics OWNER TO nattery;
ALTER SCHEMA users OWNER TO nattery;
ALTER SCHEMA integration OWNER TO nattery;

\if :{?skip_test_db}
\else
\connect postgres
SELECT 'CREATE DATABASE nattery_test OWNER nattery'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'nattery_test') \gexec
ALTER DATABASE nattery_test OWNER TO nattery;

\connect nattery_test
CREATE SCHEMA IF NOT EXISTS device AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS trading AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS analytics AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS users AUTHORIZATION nattery;
CREATE SCHEMA IF NOT EXISTS integration AUTHORIZATION nattery;
ALTER SCHEMA device OWNER TO nattery;
ALTER SCHEMA trading OWNER TO nattery;
ALTER SCHEMA analytics OWNER TO nattery;
ALTER SCHEMA users OWNER TO nattery;
ALTER SCHEMA integration OWNER TO nattery;
\endif
