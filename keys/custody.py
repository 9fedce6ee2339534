"""Custody of key material (SPEC §5, §9): generation, sealing at rest, check values, download wrapping.

Material depends on the key spec (:mod:`keys.specs`): random bytes for symmetric and
HMAC keys, a PKCS#8 DER private key for RSA and EC keys. Each step is one small
function taking the spec (:func:`generate_material`, :func:`seal`, :func:`check_values`,
:func:`wrap_for_download`), so the material of a key can later be one of several
versions without these changing.

Material is sealed with AES-256-GCM under the key-encryption key (KEK). The
associated data binds each ciphertext to its key's id and its material version
(SPEC §10), so a sealed blob copied to another key, or to another version of the
same key, fails to open. (Blobs of format 1, sealed before keys had versions, bind
the key id only; they open as version 1, which is what they were migrated to.)
Sealed blobs carry the KEK's fingerprint so that a KEK rotation (``byok_rotate_kek``)
can tell old rows from new ones.

Python cannot reliably wipe memory; the functions here keep plaintext in as few
objects and for as short a time as they can, and hand out ``bytearray`` where the
caller can clear it.

Two backends (SPEC §13, ``BYOK_CUSTODY``): ``software`` is all of the above;
``pkcs11`` (:mod:`keys.hsm`) keeps the KEK in an HSM and hands out
:class:`~keys.hsm.HsmMaterial` instead of plaintext. The same functions take either
kind (:data:`Material`), so callers need not know which backend runs; blobs say which
backend sealed them (format byte 1 and 2: software, 3: HSM).
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
from cryptography.hazmat.primitives import cmac, hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from byok_portal import wrapping
from keys import hsm
from keys.hsm import HsmMaterial
from keys.specs import DEFAULT_SPEC, Family, spec_of

# What generate_material/unseal hand out: plaintext (software) or an HSM-wrapped handle (pkcs11).
Material = bytearray | HsmMaterial
SOFTWARE, PKCS11 = "software", "pkcs11"

_FORMAT_V1 = b"\x01"  # software, before material versions: read, never written
_FORMAT_V2 = b"\x02"  # software, bound to key id and version
_NONCE_BYTES = 12
_FINGERPRINT_BYTES = 8
DOWNLOAD_KEY_SIZES = (2048, 3072, 4096)
_RSA_PUBLIC_EXPONENT = 65537
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}
_HMAC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA224": hashes.SHA224,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


class CustodyError(Exception):
    """Sealed material cannot be opened (wrong KEK, tampered row, or swapped between rows)."""


def backend() -> str:
    """The configured custody backend (``BYOK_CUSTODY``): ``software`` or ``pkcs11``."""
    return str(settings.BYOK_CUSTODY)


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


def generate_material(key_spec: str = DEFAULT_SPEC) -> Material:
    """Fresh material for a key of ``key_spec`` (SPEC §9); with ``pkcs11``, generated by the HSM.

    Symmetric and HMAC keys: random bytes of the spec's length from the OS CSPRNG.
    RSA (e=65537) and EC keys: a private key generated by ``cryptography``, kept as
    unencrypted PKCS#8 DER (what KMS imports). RSA-4096 takes a second or more: callers
    generate before they take any lock.
    """
    if backend() == PKCS11:
        try:
            return hsm.generate(key_spec)
        except hsm.UnsupportedSpec as exc:
            raise ValidationError({"key_spec": str(exc)}, code="unsupported_by_custody") from exc
    return generate_software_material(key_spec)


def generate_software_material(key_spec: str = DEFAULT_SPEC) -> bytearray:
    """Material generated in this process (the ``software`` backend)."""
    spec = spec_of(key_spec)
    if spec.family in (Family.SYMMETRIC, Family.HMAC):
        return bytearray(secrets.token_bytes(spec.size))
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if spec.family == Family.RSA:
        private_key = rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=spec.size)
    else:
        private_key = ec.generate_private_key(_EC_CURVES[spec.detail]())
    return bytearray(
        private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _aad(key_id: uuid.UUID, version: int, sealed_format: bytes) -> bytes:
    if sealed_format == _FORMAT_V1:
        return b"byok-portal/material/v1/" + key_id.bytes
    return b"byok-portal/material/v2/" + key_id.bytes + version.to_bytes(4, "big")


def seal(key_id: uuid.UUID, material: bytes | Material, version: int = 1) -> bytes:
    """Encrypt ``material`` for storage as version ``version`` of the key ``key_id``.

    An HSM's material is stored in its KEK-wrapped form, bound to the same key id and version.
    """
    if isinstance(material, HsmMaterial):
        return hsm.seal(_aad(key_id, version, _FORMAT_V2), material)
    if backend() == PKCS11:
        # Plaintext reaches the HSM only through the explicit migration (keys/jobs/kek.py).
        raise CustodyError("BYOK_CUSTODY=pkcs11 seals only material the HSM holds")
    return seal_software(key_id, material, version)


def seal_software(key_id: uuid.UUID, material: bytes | bytearray, version: int = 1) -> bytes:
    """Seal under the software KEK whatever the backend: for secrets that are not key material (webhook secrets)."""
    if not material:
        raise ValueError("no key material to seal")
    kek = current_kek()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(kek.key).encrypt(nonce, bytes(material), _aad(key_id, version, _FORMAT_V2))
    return _FORMAT_V2 + kek.fingerprint + nonce + ciphertext


def sealed_with_current_kek(blob: bytes) -> bool:
    """Whether ``blob`` is sealed the way :func:`seal` seals today: configured backend, current format and KEK.

    KEK rotation skips such blobs.
    """
    blob = bytes(blob)
    if backend() == PKCS11:
        return blob.startswith(hsm.FORMAT_HSM) and hsm.blob_kek_id(blob) == hsm.current_kek_info().kek_id
    return software_sealed_with_current_kek(blob)


def software_sealed_with_current_kek(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` is sealed by :func:`seal_software` today: current format, current software KEK."""
    blob = bytes(blob)
    return blob[:1] == _FORMAT_V2 and bytes(blob[1 : 1 + _FINGERPRINT_BYTES]) == current_kek().fingerprint


def is_software_sealed(blob: bytes | memoryview) -> bool:
    return bytes(blob)[:1] in (_FORMAT_V1, _FORMAT_V2)


def unseal(key_id: uuid.UUID, blob: bytes | memoryview, version: int = 1) -> Material:
    """Open version ``version`` of ``key_id``'s material; :class:`CustodyError` if the blob is not genuine.

    An HSM's blob opens to :class:`~keys.hsm.HsmMaterial` (checked inside the HSM); a
    software blob to plaintext, but not while ``BYOK_CUSTODY=pkcs11``: such rows move
    into the HSM with ``byok_rotate_kek`` first, and nothing silently uses software.
    """
    blob = bytes(blob)
    if blob.startswith(hsm.FORMAT_HSM):
        try:
            return hsm.unseal(_aad(key_id, version, _FORMAT_V2), blob)
        except hsm.BlobError as exc:
            raise CustodyError(f"sealed material of key {key_id}: {exc}") from exc
    if backend() == PKCS11:
        raise CustodyError(
            f"material of key {key_id} is still sealed under the software KEK: run byok_rotate_kek to move it "
            "into the HSM"
        )
    return unseal_software(key_id, blob, version)


def unseal_software(key_id: uuid.UUID, blob: bytes | memoryview, version: int = 1) -> bytearray:
    """Open a software-sealed blob (the software backend, and the software → pkcs11 migration)."""
    blob = bytes(blob)
    sealed_format = blob[:1]
    known = sealed_format == _FORMAT_V2 or (sealed_format == _FORMAT_V1 and version == 1)
    if not known or len(blob) < 1 + _FINGERPRINT_BYTES + _NONCE_BYTES + 16:
        raise CustodyError(f"sealed material of key {key_id} has an unknown format")
    fingerprint = blob[1 : 1 + _FINGERPRINT_BYTES]
    nonce = blob[1 + _FINGERPRINT_BYTES : 1 + _FINGERPRINT_BYTES + _NONCE_BYTES]
    ciphertext = blob[1 + _FINGERPRINT_BYTES + _NONCE_BYTES :]
    for kek in (current_kek(), *previous_keks()):
        if kek.fingerprint != fingerprint:
            continue
        try:
            return bytearray(AESGCM(kek.key).decrypt(nonce, ciphertext, _aad(key_id, version, sealed_format)))
        except InvalidTag as exc:
            raise CustodyError(f"sealed material of key {key_id} failed authentication") from exc
    raise CustodyError(f"sealed material of key {key_id} is sealed under a KEK the portal does not have")


def kcv(material: bytes | Material) -> str:
    """Key check value: first 3 bytes of AES-CMAC over a zero block, upper-case hex (ANSI X9.24-1:2017)."""
    if isinstance(material, HsmMaterial):
        return hsm.check_value(material)  # CKM_AES_CMAC inside the HSM
    mac = cmac.CMAC(algorithms.AES(bytes(material)))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def hmac_kcv(material: bytes | bytearray, hash_name: str) -> str:
    """HMAC key check value (SPEC §9): first 3 bytes of HMAC with the key's own hash over 16 zero bytes."""
    mac = hmac.HMAC(bytes(material), _HMAC_HASHES[hash_name]())
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


@dataclass(frozen=True)
class CheckValues:
    """What may be shown of a key's material: a KCV (symmetric, HMAC) or the public key (RSA, EC)."""

    kcv: str = ""
    public_key: str = ""  # PEM SubjectPublicKeyInfo
    public_key_sha256: str = ""  # hex SHA-256 over the DER SubjectPublicKeyInfo (what KMS GetPublicKey returns)


def public_key_der(material: bytes | bytearray) -> bytes:
    """The DER SubjectPublicKeyInfo of a PKCS#8 DER private key."""
    private_key = serialization.load_der_private_key(bytes(material), password=None)
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def check_values(key_spec: str, material: bytes | Material) -> CheckValues:
    """The check values of ``material`` for a key of ``key_spec`` (SPEC §1, §9)."""
    if isinstance(material, HsmMaterial):
        return CheckValues(kcv=hsm.check_value(material))  # CMAC or HMAC inside the HSM
    spec = spec_of(key_spec)
    if spec.family == Family.SYMMETRIC:
        return CheckValues(kcv=kcv(material))
    if spec.family == Family.HMAC:
        return CheckValues(kcv=hmac_kcv(material, spec.detail))
    der = public_key_der(material)
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CheckValues(public_key=pem.decode("ascii"), public_key_sha256=public_key_sha256(der))


def wipe(buffer: Material) -> None:
    """Overwrite a plaintext buffer once it is no longer needed (best effort in Python)."""
    if isinstance(buffer, HsmMaterial):
        return  # no plaintext here to wipe
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


def download_wrapping_algorithm(key_spec: str = DEFAULT_SPEC) -> str:
    """RSAES_OAEP_SHA_256 for symmetric and HMAC material; RSA_AES_KEY_WRAP_SHA_256 for a private key (SPEC §9).

    With ``pkcs11``, the RSA-OAEP the HSM offers (``BYOK_PKCS11_OAEP_HASH``: SHA-1 on SoftHSM2 2.6).
    """
    algorithm = spec_of(key_spec).wrapping_algorithm
    if backend() == PKCS11 and algorithm == wrapping.RSAES_OAEP_SHA_256:
        return hsm.wrapping_algorithm()
    return algorithm


def wrap_for_download(material: bytes | Material, public_key_pem: str, key_spec: str = DEFAULT_SPEC) -> bytes:
    """The material wrapped for the prepared public key with :func:`download_wrapping_algorithm`."""
    if isinstance(material, HsmMaterial):
        public_key = load_download_public_key(public_key_pem)
        return hsm.wrap_rsa(material, public_key, download_wrapping_algorithm(key_spec))
    return wrapping.wrap(download_wrapping_algorithm(key_spec), load_download_public_key(public_key_pem), material)
