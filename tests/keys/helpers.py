"""Shared helpers for key tests: the sandbox's view of a KMS key, and an RSA key pair for downloads."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def sandbox_view(sandbox_url: str, key: Any) -> dict[str, Any]:
    """What the sandbox holds for the key's KMS key (never the material itself: its SHA-256 and KCV)."""
    account = key.keystore.aws_account_id
    region = key.keystore.region
    url = f"{sandbox_url}/_sandbox/kms/{account}/{region}/keys/{key.kms_key_id}"
    with urllib.request.urlopen(url) as response:
        return dict(json.loads(response.read()))


_private_keys: dict[int, rsa.RSAPrivateKey] = {}


def rsa_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key pair per size for the whole run (generating RSA keys is slow)."""
    if bits not in _private_keys:
        _private_keys[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _private_keys[bits]


def public_pem(bits: int = 2048) -> str:
    return (
        rsa_private_key(bits)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
