"""`nattery-user bootstrap-admin`: creates the first admin with a password printed once; idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from nattery_shared.testing import test_env


@pytest.mark.usefixtures("migrated")
def test_bootstrap_admin_is_idempotent_and_prints_the_password_once() -> None:
    org = f"Demo {uuid.uuid4().hex[:8]}"
    email = f"first-admin-{uuid.uuid4().hex[:8]}@example.com"
    env = {**os.environ, **test_env()}

    def run() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "nattery_user", "bootstrap-admin", "--org", org, "--email", email],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    first = run()
    assert "created admin" in first and "password (shown once): " in first
    password = first.split("password (shown once): ", 1)[1].strip()
    assert len(password) >= 20
    second = run()
    assert "already exists" in second and password not in second and "password" not in second
