"""Custody of key material (SPEC §5): generation, sealing at rest, KCV, download wrapping.

Material is sealed with AES-256-GCM under the key-encryption key (KEK). The
associated data binds each ciphertext to its key's id, so a sealed blob copied to
another row fails to open. Sealed blobs carry the KEK's fingerprint so that a KEK
rotation (``byok_rotate_kek``) can tell old rows from new ones.

Python cannot reliably wipe memory; the functions here keep plaintext in as few
objects and for as short a time as they can, and hand out ``bytearray`` where the
caller can clear it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

MATERIAL_BYTES = 32
_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12
_FINGERPRINT_BYTES = 8
DOWNLOAD_KEY_SIZES = (2048, 3072, 4096)
DOWNLOAD_WRAPPING_ALGORITHM = "RSAES_OAEP_SHA_256"


class CustodyError(Exception):
    """Sealed material cannot be opened (wrong KEK, tampered row, or swapped between rows)."""


@dataclass(frozen=True)
class Kek:
    """A key-encryption key and its public fingerprint."""

    key: bytes

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(b"byok-portal/kek-fingerprint/" + self.key).digest()[:_FINGERPRINT_BYTES]


def _decode_kek(text: str, source: str) -> Kek:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{source} is not valid base64") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured(f"{source} must be base64 of exactly 32 bytes, got {len(raw)}")
    return Kek(raw)


def _read_or_create_dev_kek(path: Path) -> str:
    if not path.exists():
        if not settings.DEBUG:
            raise ImproperlyConfigured(f"BYOK_KEK_FILE={path} does not exist")
        # Development only: generate once and keep it, so restarts can still open the material.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text()


@cache
def current_kek() -> Kek:
    """The KEK new material is sealed with (``BYOK_KEK``, else ``BYOK_KEK_FILE``)."""
    if settings.BYOK_KEK:
        return _decode_kek(settings.BYOK_KEK, "BYOK_KEK")
    if settings.BYOK_KEK_FILE:
        return _decode_kek(_read_or_create_dev_kek(Path(settings.BYOK_KEK_FILE)), "BYOK_KEK_FILE")
    raise ImproperlyConfigured("No KEK configured: set BYOK_KEK or BYOK_KEK_FILE")


@cache
def previous_keks() -> tuple[Kek, ...]:
    """KEKs being rotated away from (``BYOK_KEK_PREVIOUS``, comma-separated): read, never written."""
    raw = getattr(settings, "BYOK_KEK_PREVIOUS", "")
    return tuple(_decode_kek(item, "BYOK_KEK_PREVIOUS") for item in raw.split(",") if item.strip())


def generate_material() -> bytearray:
    """256 bits from the operating system's CSPRNG."""
    return bytearray(secrets.token_bytes(MATERIAL_BYTES))


def _aad(key_id: uuid.UUID) -> bytes:
    return b"byok-portal/material/v1/" + key_id.bytes


def seal(key_id: uuid.UUID, material: bytes | bytearray) -> bytes:
    """Encrypt ``material`` for storage in the row of ``key_id``."""
    if len(material) != MATERIAL_BYTES:
        raise ValueError("key material must be 32 bytes")
    kek = current_kek()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(kek.key).encrypt(nonce, bytes(material), _aad(key_id))
    return _FORMAT_V1 + kek.fingerprint + nonce + ciphertext


def sealed_with_current_kek(blob: bytes) -> bool:
    return bytes(blob[1 : 1 + _FINGERPRINT_BYTES]) == current_kek().fingerprint


def unseal(key_id: uuid.UUID, blob: bytes | memoryview) -> bytearray:
    """Open a blob sealed by :func:`seal` for ``key_id``; :class:`CustodyError` if it is not genuine."""
    blob = bytes(blob)
    if not blob.startswith(_FORMAT_V1) or len(blob) < 1 + _FINGERPRINT_BYTES + _NONCE_BYTES + 16:
        raise CustodyError(f"sealed material of key {key_id} has an unknown format")
    fingerprint = blob[1 : 1 + _FINGERPRINT_BYTES]
    nonce = blob[1 + _FINGERPRINT_BYTES : 1 + _FINGERPRINT_BYTES + _NONCE_BYTES]
    ciphertext = blob[1 + _FINGERPRINT_BYTES + _NONCE_BYTES :]
    for kek in (current_kek(), *previous_keks()):
        if kek.fingerprint != fingerprint:
            continue
        try:
            return bytearray(AESGCM(kek.key).decrypt(nonce, ciphertext, _aad(key_id)))
        except InvalidTag as exc:
            raise CustodyError(f"sealed material of key {key_id} failed authentication") from exc
    raise CustodyError(f"sealed material of key {key_id} is sealed under a KEK the portal does not have")


def kcv(material: bytes | bytearray) -> str:
    """Key check value: first 3 bytes of AES-CMAC over a zero block, upper-case hex (ANSI X9.24-1:2017)."""
    mac = cmac.CMAC(algorithms.AES(bytes(material)))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def wipe(buffer: bytearray) -> None:
    """Overwrite a plaintext buffer once it is no longer needed (best effort in Python)."""
    for i in range(len(buffer)):
        buffer[i] = 0


def load_download_public_key(pem: str) -> rsa.RSAPublicKey:
    """Parse and check a download public key: RSA, 2048/3072/4096 bits, PEM. ValidationError otherwise."""
    try:
        public_key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValidationError(
            "Not a PEM-encoded public key (expected -----BEGIN PUBLIC KEY-----).", code="invalid_public_key"
        ) from exc
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValidationError("Only RSA public keys can wrap key material.", code="invalid_public_key")
    if public_key.key_size not in DOWNLOAD_KEY_SIZES:
        raise ValidationError(
            f"RSA key of {public_key.key_size} bits refused: use 2048, 3072 or 4096 bits.", code="invalid_key_size"
        )
    return public_key


def public_key_fingerprint(pem: str) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo: safe to record in the audit trail."""
    der = load_download_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def _oaep_sha256() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def wrap_for_download(material: bytes | bytearray, public_key_pem: str) -> bytes:
    """RSAES-OAEP with SHA-256 and MGF1-SHA-256, as SPEC §2 requires for downloads."""
    return load_download_public_key(public_key_pem).encrypt(bytes(material), _oaep_sha256())
