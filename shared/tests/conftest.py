"""Fixtures for the kit's own tests: a scratch PostgreSQL schema (dropped afterwards) and a pool on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from nattery_shared.db import create_pool, open_pool
from nattery_shared.settings import PostgresSettings
from nattery_shared.testing import TEST_PG_DSN


@pytest.fixture
def scratch_schema() -> Iterator[str]:
    schema = f"kit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(TEST_PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(TEST_PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
async def scratch_pool(scratch_schema: str) -> AsyncIterator[Any]:
    pool = create_pool(
        PostgresSettings(dsn=SecretStr(TEST_PG_DSN), pool_max_size=4), schema=scratch_schema, name="kit-test"
    )
    await open_pool(pool)
    await pool.wait()
    try:
        yield pool
    finally:
        await pool.close()
