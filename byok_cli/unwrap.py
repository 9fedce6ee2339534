"""Unwrapping a download locally and checking it (SPEC §9; the same steps as the portal's ``openssl`` commands).

``RSAES_OAEP_SHA_256``: RSA-OAEP with SHA-256 and MGF1-SHA-256 (symmetric and HMAC material).
``RSA_AES_KEY_WRAP_SHA_256``: RSA-OAEP-SHA-256 of an AES-256 key, then the PKCS#8 DER private key
under AES key wrap with padding (RFC 5649). The check values: AES-CMAC (symmetric) or HMAC with
the key's hash (HMAC keys) of 16 zero bytes, first 3 bytes in upper-case hex; SHA-256 of the DER
public key (RSA and EC keys). The material stays in memory unless the user names a file for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

OAEP = "RSAES_OAEP_SHA_256"
AES_KEY_WRAP = "RSA_AES_KEY_WRAP_SHA_256"
HMAC_HASHES = {"HMAC_224": "sha224", "HMAC_256": "sha256", "HMAC_384": "sha384", "HMAC_512": "sha512"}


class UnwrapError(Exception):
    """The download does not open with this private key, or is not what it claims."""


@dataclass(frozen=True)
class Checked:
    """One unwrapped material and whether its check value matched the portal's."""

    check_value: str  # what this machine computed
    expected: str  # what the portal said
    material: bytes

    @property
    def ok(self) -> bool:
        return hmac.compare_digest(self.check_value.lower(), self.expected.lower())


def load_private_key(pem: bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        raise UnwrapError(f"not a readable PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnwrapError("the private key must be an RSA key (the one whose public key prepared the download)")
    return key


def fingerprint(private_key: rsa.RSAPrivateKey) -> str:
    """``SHA256:<hex>`` of the public key's DER, as the portal names the key a download is wrapped for."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def unwrap(algorithm: str, wrapped_b64: str, private_key: rsa.RSAPrivateKey) -> bytes:
    try:
        wrapped = base64.b64decode(wrapped_b64, validate=True)
        if algorithm == OAEP:
            return private_key.decrypt(wrapped, _oaep())
        if algorithm == AES_KEY_WRAP:
            size = private_key.key_size // 8
            aes_key = private_key.decrypt(wrapped[:size], _oaep())
            return aes_key_unwrap_with_padding(aes_key, wrapped[size:])
    except ValueError as exc:
        raise UnwrapError("the material does not unwrap with this private key") from exc
    raise UnwrapError(f"unknown wrapping algorithm {algorithm!r}")


def check_value(key_spec: str, material: bytes) -> str:
    """The KCV (symmetric, HMAC) or the public key's SHA-256 (RSA, EC) of ``material``."""
    if key_spec == "SYMMETRIC_DEFAULT":
        mac = cmac.CMAC(algorithms.AES(material))
        mac.update(bytes(16))
        return mac.finalize()[:3].hex().upper()
    if key_spec in HMAC_HASHES:
        return hmac.new(material, bytes(16), HMAC_HASHES[key_spec]).digest()[:3].hex().upper()
    try:
        private = serialization.load_der_private_key(material, password=None)
    except ValueError as exc:
        raise UnwrapError("the unwrapped material is not a PKCS#8 private key") from exc
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Opened:
    """A download unwrapped and checked: the current material, and each version's when the portal lists them."""

    current: Checked
    versions: list[tuple[object, Checked]]

    @property
    def ok(self) -> bool:
        return self.current.ok and all(checked.ok for _, checked in self.versions)


def open_download(download: Mapping[str, Any], private_key: rsa.RSAPrivateKey) -> Opened:
    """Unwrap every material of ``download`` and compute its check value next to the portal's."""
    key_spec = str(download.get("key_spec") or "SYMMETRIC_DEFAULT")
    algorithm = str(download["wrapping_algorithm"])
    field = "kcv" if key_spec == "SYMMETRIC_DEFAULT" or key_spec in HMAC_HASHES else "public_key_sha256"

    def checked(entry: Mapping[str, Any]) -> Checked:
        material = unwrap(algorithm, str(entry["wrapped_key_material"]), private_key)
        return Checked(check_value(key_spec, material), str(entry.get(field) or entry.get("kcv") or ""), material)

    materials = download.get("materials")
    versions = [(entry.get("version"), checked(entry)) for entry in materials] if isinstance(materials, list) else []
    return Opened(current=checked(download), versions=versions)
