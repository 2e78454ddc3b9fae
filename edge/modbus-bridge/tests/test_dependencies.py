"""The bridge installs the light contracts package only: no web framework, database or AMQP client.

The image runs ``uv sync --frozen --no-dev --package nattery-modbus-bridge`` (Dockerfile), so its
dependency closure is the one uv.lock records for the package; the installed metadata of this
environment must say the same.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = {"fastapi", "psycopg", "alembic", "aio-pika", "starlette", "sqlalchemy", "nattery-shared"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_closure(root_package: str) -> set[str]:
    """Every package uv.lock installs for ``root_package`` without dev groups (extras followed)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages: dict[str, dict[str, Any]] = {_norm(p["name"]): p for p in lock["package"]}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(_norm(root_package), ())]
    while todo:
        name, extras = todo.pop()
        pkg = packages[name]
        deps = list(pkg.get("dependencies", []))
        for extra in extras:
            deps += pkg.get("optional-dependencies", {}).get(extra, [])
        if name in seen and not extras:
            continue
        seen.add(name)
        for dep in deps:
            todo.append((_norm(dep["name"]), tuple(dep.get("extra", ()))))
    return seen


def installed_closure(root_package: str) -> set[str]:
    """The same walk over this environment's installed metadata (extras not followed: the bridge asks
    for none, and the lock walk above covers them anyway)."""
    seen: set[str] = set()
    todo = [root_package]
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            # markers for this platform; requirements of an extra only come with the extra
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_bridge_closure_has_no_service_stack() -> None:
    closure = lock_closure("nattery-modbus-bridge")
    # the walk really walks: what the bridge needs is in it
    assert {
        "nattery-contracts",
        "pymodbus",
        "pyserial",
        "aiomqtt",
        "paho-mqtt",
        "pydantic",
        "pyyaml",
    } <= closure
    assert not closure & FORBIDDEN, sorted(closure & FORBIDDEN)
    # and the same walk finds the service stack where it is
    assert {"fastapi", "psycopg", "alembic", "aio-pika"} <= lock_closure("nattery-shared")


def test_installed_metadata_agrees() -> None:
    closure = installed_closure("nattery-modbus-bridge")
    assert {"nattery-contracts", "pymodbus", "pyserial", "aiomqtt"} <= closure
    assert not closure & FORBIDDEN, sorted(closure & FORBIDDEN)
    assert {"fastapi", "psycopg", "alembic", "aio-pika"} <= installed_closure("nattery-shared")
