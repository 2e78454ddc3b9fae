"""Argon2id password hashing (argon2-cffi) and the password policy."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from importlib import resources

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from nattery_shared.errors import Unprocessable
from nattery_user.settings import Argon2Settings

MIN_LENGTH = 12
MAX_LENGTH = 256  # bounds hashing work per request


class Passwords:
    """Hashes in a worker thread, at most ``max_concurrent`` at once (each hash holds its memory cost)."""

    def __init__(self, settings: Argon2Settings) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_cost_kib,
            parallelism=settings.parallelism,
            type=argon2.Type.ID,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        # Verified against when the email is unknown, so both paths cost the same.
        self._dummy_hash = self._hasher.hash("nattery-timing-equaliser")

    @property
    def parameters(self) -> dict[str, int]:
        return {
            "time_cost": self._hasher.time_cost,
            "memory_cost_kib": self._hasher.memory_cost,
            "parallelism": self._hasher.parallelism,
        }

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        # Longer than any password the policy accepts: cannot match, but costs the same to refuse.
        too_long = len(password) > MAX_LENGTH
        try:
            self._hasher.verify(password_hash or self._dummy_hash, password[:MAX_LENGTH])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None and not too_long

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("nattery_user.data").joinpath("common_passwords.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def policy_violations(password: str, email: str) -> list[str]:
    """Reasons the password is refused (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords() or lowered.rstrip("0123456789!.?") in common_passwords():
        problems.append("is too common")
    local = email.lower().split("@", 1)[0]
    if email.lower() in lowered or (len(local) >= 3 and local in lowered):
        problems.append("must not contain the email address")
    if len(set(password)) < 5:
        problems.append("must use more than a few different characters")
    return problems


def check_policy(password: str, email: str) -> None:
    problems = policy_violations(password, email)
    if problems:
        raise Unprocessable("password rejected: " + "; ".join(problems), details={"password": problems})
