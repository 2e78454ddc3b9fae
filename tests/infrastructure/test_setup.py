"""infrastructure/local/setup.sh on an already set-up machine: quick, quiet, and everything exists."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import psycopg
import pytest

from .conftest import REPO_ROOT, port_open

SCHEMAS = {"device", "trading", "analytics", "users", "integration"}

pytestmark = pytest.mark.skipif(
    not (port_open(5432) and port_open(8086) and shutil.which("psql")), reason="infrastructure is not set up"
)


def test_setup_is_idempotent() -> None:
    # (No timing assertion here: a second run takes about 1 s on this machine, see the closing note.)
    result = subprocess.run(
        ["bash", "infrastructure/local/setup.sh", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "nothing to do, nothing to say"


@pytest.mark.parametrize("database", ["nattery", "nattery_test"])
def test_postgres_role_database_and_schemas(database: str) -> None:
    with psycopg.connect(f"postgresql://nattery:nattery-dev@127.0.0.1:5432/{database}") as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE pg_get_userbyid(nspowner) = 'nattery'"
        ).fetchall()
    assert {row[0] for row in rows} >= SCHEMAS


def test_influxdb_databases_and_retention() -> None:
    response = httpx.post(
        "http://127.0.0.1:8086/query", data={"q": "SHOW RETENTION POLICIES ON nattery_test"}
    )
    series = response.json()["results"][0]["series"][0]
    policies = {row[0]: row for row in series["values"]}
    assert policies["autogen"][1] == "168h0m0s"
    assert policies["autogen"][4] is True
    response = httpx.post("http://127.0.0.1:8086/query", data={"q": "SHOW RETENTION POLICIES ON nattery"})
    assert response.json()["results"][0]["series"][0]["values"][0][1] == "9600h0m0s"
