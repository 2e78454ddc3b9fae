"""Per-user settings: timezone, units, notification channel per alert severity."""

from __future__ import annotations

import uuid

from nattery_shared.auth import Principal
from nattery_user.deps import UserContext
from nattery_user.preferences import repository
from nattery_user.preferences.schemas import UserPreferences


async def get(ctx: UserContext, principal: Principal) -> UserPreferences:
    async with ctx.pool.connection() as conn:
        row = await repository.get(conn, uuid.UUID(principal.subject))
    return UserPreferences.model_validate(row) if row else UserPreferences()


async def put(ctx: UserContext, principal: Principal, prefs: UserPreferences) -> UserPreferences:
    async with ctx.pool.connection() as conn:
        await repository.upsert(
            conn,
            uuid.UUID(principal.subject),
            timezone=prefs.timezone,
            units=prefs.units.value,
            notifications=prefs.model_dump(mode="json")["notifications"],
        )
    return prefs
