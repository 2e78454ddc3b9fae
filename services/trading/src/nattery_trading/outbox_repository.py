"""SQL of trading's outbox rows (the table is the shared kit's, ``nattery_shared.outbox``): many events
stored with one binary COPY, a re-announcement re-armed, a published batch marked with one UPDATE."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb

from nattery_contracts.events import CloudEvent


async def enqueue(conn: AsyncConnection[Any], events: Sequence[CloudEvent[Any]]) -> None:
    """Store new ``events`` in ``conn``'s transaction (one binary COPY for all of them)."""
    if not events:
        return
    async with (
        conn.cursor() as cur,
        cur.copy("COPY outbox (id, type, envelope) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["uuid", "text", "jsonb"])
        for e in events:
            await copy.write_row((e.id, e.type.value, Jsonb(e.model_dump_json(), dumps=_as_is)))


def _as_is(text: str) -> str:
    """The envelope is JSON already (pydantic's serialiser): stored as it is."""
    return text


async def enqueue_again(conn: AsyncConnection[Any], events: Sequence[CloudEvent[Any]]) -> None:
    """Store ``events`` whose ids may be stored already (a re-announcement): such a row becomes
    unpublished again, so the relay publishes it once more under the same id."""
    for e in events:
        await conn.execute(
            "INSERT INTO outbox (id, type, envelope) VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "envelope = EXCLUDED.envelope, published_at = NULL, created_at = now()",
            (e.id, e.type.value, e.model_dump_json()),
        )


# Rows of events the committer holds, still unpublished and not being published by another process.
CLAIM_BY_ID = "SELECT id FROM outbox WHERE id = ANY(%s) AND published_at IS NULL FOR UPDATE SKIP LOCKED"


async def mark_published(cur: AsyncCursor[Any], ids: Sequence[uuid.UUID]) -> None:
    """Rows published (in the claiming transaction)."""
    await cur.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", (list(ids),))
