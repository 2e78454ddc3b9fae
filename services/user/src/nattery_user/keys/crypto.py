"""Signing-key material: generate RSA keys, encrypt private keys at rest, export public JWKs. Pure."""

from __future__ import annotations

import json
import os
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return jwk


def encrypt_private_key(private_key: rsa.RSAPrivateKey, kid: str, kek: bytes) -> bytes:
    """AES-256-GCM over the PKCS#8 DER; the kid is authenticated so rows cannot be swapped."""
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, der, kid.encode())


def decrypt_private_key(blob: bytes, kid: str, kek: bytes) -> rsa.RSAPrivateKey:
    der = AESGCM(kek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], kid.encode())
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {kid} is not an RSA key")
    return key
