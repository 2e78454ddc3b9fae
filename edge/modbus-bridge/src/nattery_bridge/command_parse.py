"""A command's payload as received: JSON, an id, then the contract's model and typed parameters.

Each step fails with what the bridge can still answer: no JSON or no id can only be reported as an
event (there is no id to acknowledge); a bad body with a good id gets a ``rejected`` ack naming the
fields.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nattery_contracts.mqtt import Command


@dataclass(frozen=True, slots=True)
class Unidentified:
    """Not JSON, or no valid id: nothing to acknowledge."""

    reason: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Identified:
    """A command id and the decoded JSON, not validated yet."""

    cmd_id: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Parsed:
    command: Command
    params: Any  # the typed parameters of ``command.type``


@dataclass(frozen=True, slots=True)
class Invalid:
    """A well-identified command whose body does not validate."""

    reason: str


def identify(raw: bytes) -> Identified | Unidentified:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Unidentified("command payload is not JSON", {})
    cmd_id = command_id(data)
    if cmd_id is None:
        return Unidentified("command without a valid id", {"payload": str(raw[:200])})
    return Identified(cmd_id, data)


def validate(data: dict[str, Any]) -> Parsed | Invalid:
    try:
        cmd = Command.model_validate(data)
        return Parsed(cmd, cmd.typed_params())
    except ValidationError as e:
        return Invalid(f"invalid command: {short(e)}")


def command_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    try:
        return str(uuid.UUID(str(data.get("id"))))
    except ValueError:
        return None


def short(e: ValidationError) -> str:
    """The first three validation errors, each as ``field: message``."""
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)
