"""Standard Webhooks v1 signatures (providers-2.md §6.2): HMAC-SHA256 over ``{id}.{timestamp}.{body}``,
the key being the base64-decoded part of the ``whsec_`` secret, compared in constant time with every
``v1,<base64>`` entry of the ``webhook-signature`` header (several during a key rotation)."""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """HMAC key of a ``whsec_`` secret (base64 after the prefix); raises ValueError when malformed."""
    if not secret.startswith(PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    if len(key) < 16:
        raise ValueError("webhook secret too short (at least 16 bytes after whsec_)")
    return key


def sign(key: bytes, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery."""
    mac = hmac.new(key, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(key: bytes, delivery_id: str, timestamp: str, body: bytes, header: str) -> bool:
    expected = sign(key, delivery_id, timestamp, body).encode()
    matched = False
    for entry in header.split(" "):
        if entry.startswith("v1,"):
            # no early exit: every entry is compared, each in constant time
            matched |= hmac.compare_digest(expected, entry.encode())
    return matched
