"""The JWKS every service fetches (``NATTERY_AUTH__JWKS_URL``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from nattery_user.deps import KeyRingDep

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens (public)")
async def jwks(keyring: KeyRingDep, response: Response) -> dict[str, Any]:
    # Short cache: verifiers refetch on an unknown kid anyway.
    response.headers["Cache-Control"] = "public, max-age=60"
    return keyring.jwks()
