"""Mosquitto 2.0 ``$7$`` hashes made in Python match ``mosquitto_passwd``; the password file is written
atomically and reconciled with the registry without touching entries it does not manage."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nattery_device.mqtt.credentials import PasswordFile, hash_password, verify_password


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_hash_format_matches_mosquitto_passwd(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "site-a", "s3cret"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert verify_password("s3cret", theirs) and not verify_password("wrong", theirs)
    ours = hash_password("s3cret")
    assert ours.startswith("$7$101$") and verify_password("s3cret", ours)
    assert len(ours) == len(theirs)


def test_set_remove_and_reconcile(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("device-service:$7$101$x$y\n")
    path.chmod(0o600)
    passwords = PasswordFile(path, pid_file=None)
    a, b = passwords.hash("pa"), passwords.hash("pb")
    passwords.set_user("site-a", a)
    passwords.set_user("site-b", b)
    assert passwords.users() == {"device-service", "site-a", "site-b"}
    assert path.stat().st_mode & 0o777 == 0o600

    # Someone else's rewrite lost site-a and resurrected a revoked site-c.
    path.write_text(f"device-service:$7$101$x$y\nsite-b:{b}\nsite-c:{passwords.hash('pc')}\n")
    assert passwords.reconcile({"site-a": a, "site-b": b}, {"site-c"}) is True
    assert passwords.users() == {"device-service", "site-a", "site-b"}
    assert passwords.reconcile({"site-a": a, "site-b": b}, {"site-c"}) is False  # nothing to do
    assert passwords.remove_user("site-b") is True
    assert passwords.users() == {"device-service", "site-a"}
    assert not list(tmp_path.glob(".passwd-*"))  # no temp files left behind
