"""Connection secrets at rest: AES-256-GCM under a key id from the keyring (settings.SecretsKeyring).

Blob = 12-byte random nonce || ciphertext+tag. The associated data binds a blob to its row
(``connection id | org id | provider | key id``), so a blob copied onto another row does not decrypt.
"""

from __future__ import annotations

import json
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nattery_integration.settings import SecretsKeyring

NONCE_BYTES = 12


class SecretsUndecryptable(Exception):
    """A blob under an unknown key id, or tampered with / moved to another row."""


class SecretBox:
    def __init__(self, keyring: SecretsKeyring) -> None:
        self._keys = keyring.key_bytes()
        self.current = keyring.current

    @staticmethod
    def _aad(connection_id: uuid.UUID, org_id: uuid.UUID, provider: str, key_id: str) -> bytes:
        return f"{connection_id}|{org_id}|{provider}|{key_id}".encode()

    def encrypt(
        self, secrets: dict[str, str], *, connection_id: uuid.UUID, org_id: uuid.UUID, provider: str
    ) -> tuple[bytes, str]:
        """(blob, key id) under the current key."""
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(secrets, sort_keys=True).encode()
        aad = self._aad(connection_id, org_id, provider, self.current)
        return nonce + AESGCM(self._keys[self.current]).encrypt(nonce, plain, aad), self.current

    def decrypt(
        self, blob: bytes, key_id: str, *, connection_id: uuid.UUID, org_id: uuid.UUID, provider: str
    ) -> dict[str, str]:
        key = self._keys.get(key_id)
        if key is None:
            raise SecretsUndecryptable(f"secrets are under key {key_id!r}, which is not in the keyring")
        try:
            plain = AESGCM(key).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(connection_id, org_id, provider, key_id)
            )
        except InvalidTag as err:
            raise SecretsUndecryptable("secrets do not decrypt (tampered with, or not this row's)") from err
        data: dict[str, str] = json.loads(plain)
        return data
