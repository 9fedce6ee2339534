"""Wrapping key material under an RSA public key, as AWS KMS defines the algorithms.

One place for both directions the portal wraps material in: into KMS
(``ImportKeyMaterial``, with the public key from ``GetParametersForImport``) and out
to a person (a two-person download, with the downloader's prepared public key).

- ``RSAES_OAEP_SHA_256``: RSA-OAEP with SHA-256 and MGF1-SHA-256 over the material
  itself. Fits symmetric and HMAC material, not a private key (RSA-2048 carries at most
  190 bytes).
- ``RSA_AES_KEY_WRAP_SHA_256``: a fresh AES-256 key, RSA-OAEP-SHA-256 encrypted,
  followed by the material wrapped under that AES key with AES key wrap with padding
  (RFC 5649). The result is the RSA ciphertext (as long as the modulus) followed by
  the AES-KWP ciphertext; this is what KMS expects and what ``openssl`` unwraps.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding

RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
RSA_AES_KEY_WRAP_SHA_256 = "RSA_AES_KEY_WRAP_SHA_256"
# SHA-1 OAEP: what an HSM whose CKM_RSA_PKCS_OAEP lacks SHA-256 produces (SoftHSM2 2.6); KMS accepts it.
RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
WRAPPING_ALGORITHMS = (RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_256, RSAES_OAEP_SHA_1)
_AES_KEY_BYTES = 32


def _oaep_sha256() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _oaep_sha1() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - OAEP needs no collision resistance; KMS offers it


def wrap(algorithm: str, public_key: rsa.RSAPublicKey, material: bytes | bytearray) -> bytes:
    """``material`` wrapped under ``public_key`` with ``algorithm`` (one of :data:`WRAPPING_ALGORITHMS`)."""
    if algorithm == RSAES_OAEP_SHA_256:
        return public_key.encrypt(bytes(material), _oaep_sha256())
    if algorithm == RSAES_OAEP_SHA_1:
        return public_key.encrypt(bytes(material), _oaep_sha1())
    if algorithm == RSA_AES_KEY_WRAP_SHA_256:
        aes_key = bytearray(secrets.token_bytes(_AES_KEY_BYTES))
        try:
            wrapped_key = public_key.encrypt(bytes(aes_key), _oaep_sha256())
            return wrapped_key + aes_key_wrap_with_padding(bytes(aes_key), bytes(material))
        finally:
            aes_key[:] = bytes(len(aes_key))
    raise ValueError(f"unknown wrapping algorithm {algorithm}")


def unwrap(algorithm: str, private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """The inverse of :func:`wrap` (used by tests and by whoever holds the private key)."""
    if algorithm == RSAES_OAEP_SHA_256:
        return private_key.decrypt(wrapped, _oaep_sha256())
    if algorithm == RSAES_OAEP_SHA_1:
        return private_key.decrypt(wrapped, _oaep_sha1())
    if algorithm == RSA_AES_KEY_WRAP_SHA_256:
        split = private_key.key_size // 8
        aes_key = private_key.decrypt(wrapped[:split], _oaep_sha256())
        return aes_key_unwrap_with_padding(aes_key, wrapped[split:])
    raise ValueError(f"unknown wrapping algorithm {algorithm}")
