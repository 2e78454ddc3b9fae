"""Site MQTT credentials in Mosquitto 2.0's password file, reloaded with SIGHUP.

Mosquitto 2.0's ``$7$`` format (``mosquitto_passwd``, ``src/password_mosq.c``):
``username:$7$<iterations>$<base64 salt (12 bytes)>$<base64 PBKDF2-HMAC-SHA512 (64 bytes)>``.
The file is rewritten atomically (temp file + rename in the same directory) under an exclusive
``flock`` so that two replicas, or a replica and ``mosquitto_passwd``, never interleave writes.
On SIGHUP Mosquitto reloads the file and re-checks connected clients, so a removed site is dropped.

Passwords stay here; what a site's login may do is the broker's: acl_file (its own topics) and the
site-guard plugin (infrastructure/mosquitto/plugin/: client id `<slug>` or `<slug>.<name>` only, no
`$share` group), both keyed on the username this file holds, which is the site's slug. The
dynamic-security plugin was not used: it binds a login to one exact client id (a site runs one bridge
connection per device) and keeps passwords in its own store, out of reach of this file's reconcile.
Known limit (mosquitto 2.0.11): a SIGHUP that arrives while the broker is reloading is lost (it clears
its reload flag after reloading), so two sites provisioned within a few milliseconds may leave the
second one refused until the next change reloads the broker.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SALT_BYTES = 12
HASH_BYTES = 64


class BrokerReloadError(Exception):
    """The password file was written but the broker could not be told to reload it."""


def hash_password(password: str, *, iterations: int = 101, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)


def generate_password() -> str:
    return secrets.token_urlsafe(24)


class PasswordFile:
    def __init__(self, path: Path, *, pid_file: Path | None, iterations: int = 101) -> None:
        self.path = path
        self.pid_file = pid_file
        self.iterations = iterations

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def _write(self, lines: list[str]) -> None:
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=directory)
        try:
            with os.fdopen(fd, "w") as out:
                out.write("".join(f"{entry}\n" for entry in lines))
                out.flush()
                os.fsync(out.fileno())
            try:
                mode = self.path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = 0o600
            Path(tmp).chmod(mode)
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def users(self) -> set[str]:
        return {entry.split(":", 1)[0] for entry in self._read() if ":" in entry}

    def hash(self, password: str) -> str:
        return hash_password(password, iterations=self.iterations)

    def set_user(self, username: str, encoded: str) -> None:
        """Add or replace ``username`` with an already hashed password (see :meth:`hash`)."""
        with self._locked():
            lines = [e for e in self._read() if e.split(":", 1)[0] != username]
            lines.append(f"{username}:{encoded}")
            self._write(lines)
        self.reload_broker()

    def remove_user(self, username: str) -> bool:
        with self._locked():
            before = self._read()
            lines = [e for e in before if e.split(":", 1)[0] != username]
            removed = len(lines) != len(before)
            if removed:
                self._write(lines)
        self.reload_broker()
        return removed

    def reconcile(self, active: dict[str, str], inactive: set[str]) -> bool:
        """Make the file agree with the registry for the users it manages: ``active`` (username ->
        hash) present with that hash, ``inactive`` absent; other entries (the service account, users
        added by hand) are left alone. Rewrites and reloads only when something differs.

        Other tools (``mosquitto_passwd``) rewrite the same file without our lock, and a lost update
        would silently lock a site out or let a revoked one back in: this repairs both.
        """
        with self._locked():
            lines = self._read()
            current = {e.split(":", 1)[0]: e.split(":", 1)[1] for e in lines if ":" in e}
            wrong = {u for u, h in active.items() if current.get(u) != h} | (inactive & current.keys())
            if not wrong:
                return False
            kept = [e for e in lines if e.split(":", 1)[0] not in wrong]
            kept += [f"{u}:{active[u]}" for u in sorted(wrong) if u in active]
            self._write(kept)
        log.warning("password file repaired for %d site(s): %s", len(wrong), ", ".join(sorted(wrong))[:500])
        self.reload_broker()
        return True

    def reload_broker(self) -> None:
        if self.pid_file is None:
            return  # a broker that polls or is reloaded by its operator (e.g. compose entrypoint)
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as err:
            raise BrokerReloadError(f"cannot SIGHUP the broker via {self.pid_file}: {err}") from err
