"""SQL for orgs, users and memberships."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

MEMBER_COLUMNS = """
    u.id, u.email, u.display_name, u.password_hash, u.created_at,
    m.org_id, m.role, (u.disabled_at IS NOT NULL OR m.disabled_at IS NOT NULL) AS disabled
"""


async def lock_bootstrap(conn: AsyncConnection[Any]) -> None:
    """Serialise concurrent bootstraps (two replicas starting at once) until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('nattery-bootstrap-admin'))")


async def insert_org(conn: AsyncConnection[Any], *, org_id: uuid.UUID, name: str, slug: str) -> None:
    await conn.execute("INSERT INTO orgs (id, name, slug) VALUES (%s, %s, %s)", (org_id, name, slug))


async def org_by_slug(conn: AsyncConnection[Any], slug: str) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT id, name, slug FROM orgs WHERE slug = %s", (slug,))
    return await cur.fetchone()


async def insert_user(
    conn: AsyncConnection[Any], *, user_id: uuid.UUID, email: str, display_name: str, password_hash: str
) -> None:
    await conn.execute(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES (%s, %s, %s, %s)",
        (user_id, email, display_name, password_hash),
    )


async def user_by_email(conn: AsyncConnection[Any], email: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, email, display_name, password_hash, disabled_at FROM users WHERE lower(email) = lower(%s)",
        (email,),
    )
    return await cur.fetchone()


async def user_by_id(conn: AsyncConnection[Any], user_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, email, display_name, password_hash, disabled_at FROM users WHERE id = %s", (user_id,)
    )
    return await cur.fetchone()


async def active_memberships(conn: AsyncConnection[Any], user_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """
        SELECT m.org_id, m.role, o.name AS org_name FROM memberships m JOIN orgs o ON o.id = m.org_id
        WHERE m.user_id = %s AND m.disabled_at IS NULL ORDER BY m.created_at, m.org_id
        """,
        (user_id,),
    )
    return list(await cur.fetchall())


async def member(conn: AsyncConnection[Any], org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id "
        "WHERE m.org_id = %s AND m.user_id = %s",
        (org_id, user_id),
    )
    return await cur.fetchone()


async def members(conn: AsyncConnection[Any], org_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id "
        "WHERE m.org_id = %s ORDER BY lower(u.email)",
        (org_id,),
    )
    return list(await cur.fetchall())


async def insert_membership(
    conn: AsyncConnection[Any], *, org_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> None:
    await conn.execute(
        "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s)", (org_id, user_id, role)
    )


async def set_role(conn: AsyncConnection[Any], org_id: uuid.UUID, user_id: uuid.UUID, role: str) -> None:
    await conn.execute(
        "UPDATE memberships SET role = %s WHERE org_id = %s AND user_id = %s", (role, org_id, user_id)
    )


async def set_disabled(
    conn: AsyncConnection[Any], org_id: uuid.UUID, user_id: uuid.UUID, disabled: bool
) -> None:
    await conn.execute(
        "UPDATE memberships SET disabled_at = CASE WHEN %s THEN now() END WHERE org_id = %s AND user_id = %s",
        (disabled, org_id, user_id),
    )


async def set_display_name(conn: AsyncConnection[Any], user_id: uuid.UUID, display_name: str) -> None:
    await conn.execute(
        "UPDATE users SET display_name = %s, updated_at = now() WHERE id = %s", (display_name, user_id)
    )


async def set_password_hash(conn: AsyncConnection[Any], user_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s", (password_hash, user_id)
    )


async def count_active_admins(conn: AsyncConnection[Any], org_id: uuid.UUID) -> int:
    cur = await conn.execute(
        """
        SELECT count(*) AS n FROM memberships m JOIN users u ON u.id = m.user_id
        WHERE m.org_id = %s AND m.role = 'admin' AND m.disabled_at IS NULL AND u.disabled_at IS NULL
        """,
        (org_id,),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
