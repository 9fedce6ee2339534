"""HMAC and asymmetric KMS keys with imported material, as AWS behaves (SPEC §9), for the sandbox.

Split from :mod:`sandbox_aws.kms` (which keeps the key states and the import flow): what
depends on a key's spec — which wrapping algorithms fit its material, what material
it accepts, and the cryptography that uses that material (GenerateMac/VerifyMac,
Sign/Verify, GetPublicKey, RSA Encrypt/Decrypt). A key keeps its imported material
as plain bytes (``key_material``: the random bytes, or the PKCS#8 DER private key);
private keys are loaded from it when used, so nothing here needs persisting but bytes.

Sources: the KMS API reference shipped in botocore (GetParametersForImport's
``WrappingAlgorithm``, ImportKeyMaterial's ``ImportType``) and the Developer Guide
(importing-keys-conceptual.html, importing-keys-get-public-key-and-token.html).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import cmac, hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from moto.core.exceptions import JsonRESTError
from moto.kms import utils as kms_utils
from moto.kms.exceptions import ValidationException

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
SYMMETRIC_MATERIAL_LENGTH = 32

# Hash of each supported wrapping algorithm (used for RSA-OAEP, and for the AES key of RSA_AES_KEY_WRAP).
WRAPPING_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RSAES_OAEP_SHA_256": hashes.SHA256,
    "RSAES_OAEP_SHA_1": hashes.SHA1,
    "RSA_AES_KEY_WRAP_SHA_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_SHA_1": hashes.SHA1,
}
RSA_AES_WRAPPING = {"RSA_AES_KEY_WRAP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1"}

# AWS accepts HMAC material of a range of lengths per spec (importing-keys-conceptual.html).
HMAC_MATERIAL_LENGTHS = {"HMAC_224": (28, 64), "HMAC_256": (32, 64), "HMAC_384": (48, 128), "HMAC_512": (64, 128)}
HMAC_ALGORITHMS = {"HMAC_224": "HMAC_SHA_224", "HMAC_256": "HMAC_SHA_256", "HMAC_384": "HMAC_SHA_384",
                   "HMAC_512": "HMAC_SHA_512"}  # fmt: skip
_HMAC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "HMAC_224": hashes.SHA224,
    "HMAC_256": hashes.SHA256,
    "HMAC_384": hashes.SHA384,
    "HMAC_512": hashes.SHA512,
}
RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
EC_CURVES = {
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}
EC_SIGNING = {
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
}
RSA_ENCRYPTION_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RSAES_OAEP_SHA_256": hashes.SHA256,
    "RSAES_OAEP_SHA_1": hashes.SHA1,
}
_OAEP_SHA256_OVERHEAD = 2 * 32 + 2


def is_asymmetric(key_spec: str) -> bool:
    return key_spec in RSA_BITS or key_spec in EC_CURVES


def key_type(key_spec: str, key_usage: str) -> tuple[str, str]:
    """What UpdateAlias compares: symmetric, HMAC or asymmetric, and the usage."""
    kind = "asymmetric" if is_asymmetric(key_spec) else "hmac" if key_spec in HMAC_MATERIAL_LENGTHS else "symmetric"
    return kind, key_usage


class IncorrectKeyMaterialException(JsonRESTError):
    """The material is malformed, not of the key's spec, or not what the key accepted before."""

    code = 400

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "IncorrectKeyMaterialException",
            "The request was rejected because the key material in the request is, expired, invalid, "
            "or is not the same key material that was previously imported into this KMS key." + detail,
        )


class InvalidCiphertextException(JsonRESTError):
    """The wrapped key material (or a ciphertext) could not be decrypted."""

    code = 400

    def __init__(self) -> None:
        super().__init__(
            "InvalidCiphertextException",
            "The request was rejected because the specified ciphertext, or additional authenticated "
            "data incorporated into the ciphertext, such as the encryption context, is corrupted, "
            "missing, or otherwise invalid.",
        )


class UnsupportedOperationException(JsonRESTError):
    """The operation does not apply to this key."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("UnsupportedOperationException", message)


class InvalidKeyUsageException(JsonRESTError):
    """The key's usage (or spec) does not allow the operation or algorithm."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidKeyUsageException", message)


# --- import: which wrapping fits, and what material a key accepts ------------------


def check_wrapping_for_spec(key_spec: str, key_arn: str, algorithm: str, wrapping_key_bits: int) -> None:
    """GetParametersForImport refuses a wrapping algorithm that cannot carry the key's material.

    An RSA private key needs an RSA_AES algorithm; plain RSA-OAEP under an RSA-2048
    wrapping key cannot carry ECC_NIST_P521 material either (it is longer than the
    190 bytes RSA-OAEP-SHA-256 fits).
    """
    if algorithm in RSA_AES_WRAPPING:
        return
    if key_spec in RSA_BITS:
        raise UnsupportedOperationException(
            f"{key_arn} has key spec {key_spec}: RSA private key material must be wrapped with an RSA_AES "
            f"wrapping algorithm, not {algorithm}."
        )
    if key_spec == "ECC_NIST_P521" and wrapping_key_bits == 2048:
        raise UnsupportedOperationException(
            f"{algorithm} with an RSA_2048 wrapping key cannot wrap ECC_NIST_P521 key material; "
            "use a larger wrapping key or an RSA_AES wrapping algorithm."
        )


def check_import_options(key_spec: str, params: dict[str, Any]) -> None:
    """ImportType, KeyMaterialId and KeyMaterialDescription exist for symmetric encryption keys only."""
    if key_spec == SYMMETRIC_DEFAULT:
        return
    given = [name for name in ("ImportType", "KeyMaterialId", "KeyMaterialDescription") if name in params]
    if given:
        raise ValidationException(
            f"{', '.join(given)} can only be used with symmetric encryption KMS keys; this key's spec is {key_spec}."
        )


def unwrap(private_key: rsa.RSAPrivateKey, algorithm: str, wrapped: bytes) -> bytes:
    """Undo the wrapping of imported material; InvalidCiphertextException if it does not open."""
    digest = WRAPPING_HASHES[algorithm]
    oaep = padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)
    try:
        if algorithm not in RSA_AES_WRAPPING:
            return private_key.decrypt(wrapped, oaep)
        # RSA_AES_KEY_WRAP: RSA-OAEP of an ephemeral AES key (as long as the modulus), then AES-KWP (RFC 5649).
        split = private_key.key_size // 8
        aes_key = private_key.decrypt(wrapped[:split], oaep)
        return aes_key_unwrap_with_padding(aes_key, wrapped[split:])
    except (ValueError, InvalidKey, InvalidUnwrap):
        raise InvalidCiphertextException() from None


def _is_pkcs8(der: bytes) -> bool:
    """PrivateKeyInfo: SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }.

    PKCS#1 and SEC1 private keys also start with SEQUENCE { INTEGER ...} but carry an
    INTEGER or OCTET STRING next, not the AlgorithmIdentifier SEQUENCE.
    """

    def skip_header(offset: int) -> int:
        length = der[offset + 1]
        return offset + 2 + (length & 0x7F if length & 0x80 else 0)

    try:
        if der[0] != 0x30:
            return False
        version = skip_header(0)
        if der[version] != 0x02:
            return False
        algorithm = version + 2 + der[version + 1]
        return der[algorithm] == 0x30
    except IndexError:
        return False


def check_material(key_spec: str, material: bytes) -> None:
    """The unwrapped material must be what a key of ``key_spec`` takes (IncorrectKeyMaterialException)."""
    if key_spec == SYMMETRIC_DEFAULT:
        if len(material) != SYMMETRIC_MATERIAL_LENGTH:
            raise IncorrectKeyMaterialException()
        return
    if key_spec in HMAC_MATERIAL_LENGTHS:
        low, high = HMAC_MATERIAL_LENGTHS[key_spec]
        if not low <= len(material) <= high:
            raise IncorrectKeyMaterialException(f" {key_spec} key material must be {low} to {high} bytes.")
        return
    if not _is_pkcs8(material):
        raise IncorrectKeyMaterialException(" Asymmetric key material must be a PKCS#8 DER private key.")
    try:
        private_key = serialization.load_der_private_key(material, password=None)
    except (ValueError, TypeError):
        raise IncorrectKeyMaterialException(" The private key could not be parsed.") from None
    if key_spec in RSA_BITS:
        fits = isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == RSA_BITS[key_spec]
    else:
        fits = isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name == EC_CURVES[key_spec]
    if not fits:
        raise IncorrectKeyMaterialException(f" The private key is not a {key_spec} key.")


# --- what the material may reveal ------------------------------------------------------


def check_value(key_spec: str, material: bytes) -> tuple[str | None, str | None]:
    """(KCV, public key SHA-256): AES-CMAC KCV, HMAC KCV (SPEC §9), or the SHA-256 of the DER public key."""
    if key_spec == SYMMETRIC_DEFAULT:
        mac = cmac.CMAC(algorithms.AES(material))
        mac.update(bytes(16))
        return mac.finalize()[:3].hex().upper(), None
    if key_spec in _HMAC_HASHES:
        hmac_ = hmac.HMAC(material, _HMAC_HASHES[key_spec]())
        hmac_.update(bytes(16))
        return hmac_.finalize()[:3].hex().upper(), None
    if is_asymmetric(key_spec):
        return None, hashlib.sha256(public_key_der(material)).hexdigest()
    return None, None


def _load(material: bytes) -> Any:
    return serialization.load_der_private_key(material, password=None)


def public_key_der(material: bytes) -> bytes:
    return bytes(
        _load(material)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def imported_private_key(key_spec: str, material: bytes) -> kms_utils.AbstractPrivateKey:
    """moto's signing wrapper around the imported private key, so moto's Sign/Verify/GetPublicKey use it.

    moto's wrappers generate a fresh key in ``__init__``; here the imported one is put in its place.
    """
    private_key = _load(material)
    wrapper: Any
    if key_spec in RSA_BITS:
        wrapper = object.__new__(kms_utils.RSAPrivateKey)
        wrapper.key_size = private_key.key_size
    else:
        wrapper = object.__new__(kms_utils.ECDSAPrivateKey)
        wrapper.valid_signing_algorithms = EC_SIGNING[key_spec]
    wrapper.private_key = private_key
    result: kms_utils.AbstractPrivateKey = wrapper
    return result


# --- RSA encryption with the imported key ------------------------------------------------


def _encryption_padding(algorithm: str, key_arn: str) -> padding.OAEP:
    digest = RSA_ENCRYPTION_HASHES.get(algorithm)
    if digest is None:
        raise InvalidKeyUsageException(
            f"{key_arn} is an RSA key: EncryptionAlgorithm must be one of {sorted(RSA_ENCRYPTION_HASHES)}."
        )
    return padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)


def rsa_encrypt(material: bytes, algorithm: str, plaintext: bytes, key_arn: str) -> bytes:
    public_key = _load(material).public_key()
    try:
        return bytes(public_key.encrypt(plaintext, _encryption_padding(algorithm, key_arn)))
    except ValueError:
        raise ValidationException("Plaintext is too long for this RSA key and encryption algorithm.") from None


def rsa_decrypt(material: bytes, algorithm: str, ciphertext: bytes, key_arn: str) -> bytes:
    try:
        return bytes(_load(material).decrypt(ciphertext, _encryption_padding(algorithm, key_arn)))
    except ValueError:
        raise InvalidCiphertextException() from None
