"""Key specs and usages (SPEC §9): AWS's names, AWS's allowed pairs, and what each spec's material is.

A key's ``key_spec`` and ``key_usage`` are fixed at creation. This table is the one
place that says which pairs exist, what material the portal generates for a spec, and
how that material travels (into KMS and out in a download); :mod:`keys.custody`
generates, checks and wraps material by reading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.core.exceptions import ValidationError
from django.db import models

from byok_portal.wrapping import RSA_AES_KEY_WRAP_SHA_256, RSAES_OAEP_SHA_256


class KeySpec(models.TextChoices):
    """AWS KMS key specs the portal can generate and import material for."""

    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT", "SYMMETRIC_DEFAULT (AES-256)"
    HMAC_224 = "HMAC_224", "HMAC_224"
    HMAC_256 = "HMAC_256", "HMAC_256"
    HMAC_384 = "HMAC_384", "HMAC_384"
    HMAC_512 = "HMAC_512", "HMAC_512"
    RSA_2048 = "RSA_2048", "RSA_2048"
    RSA_3072 = "RSA_3072", "RSA_3072"
    RSA_4096 = "RSA_4096", "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256", "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384", "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521", "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1", "ECC_SECG_P256K1"


class KeyUsage(models.TextChoices):
    """AWS KMS key usages."""

    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT", "ENCRYPT_DECRYPT"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC", "GENERATE_VERIFY_MAC"
    SIGN_VERIFY = "SIGN_VERIFY", "SIGN_VERIFY"


class Family(StrEnum):
    """How a spec's material is made, checked and wrapped."""

    SYMMETRIC = "symmetric"
    HMAC = "hmac"
    RSA = "rsa"
    ECC = "ecc"


@dataclass(frozen=True)
class Spec:
    """One row of SPEC §9's table."""

    key_spec: KeySpec
    family: Family
    usages: tuple[KeyUsage, ...]
    size: int  # bytes of random material (symmetric, HMAC), RSA modulus bits, or EC curve bits
    # The hash of an HMAC spec (its own hash computes its check value); the SEC curve name of an EC spec.
    detail: str = ""

    @property
    def asymmetric(self) -> bool:
        return self.family in (Family.RSA, Family.ECC)

    @property
    def versioned(self) -> bool:
        """Whether a key of this spec can hold several materials (AWS: symmetric encryption keys only, SPEC §10)."""
        return self.family == Family.SYMMETRIC

    @property
    def wrapping_algorithm(self) -> str:
        """How the material travels, into KMS and out in a download: a private key needs RSA + AES key wrap."""
        return RSA_AES_KEY_WRAP_SHA_256 if self.asymmetric else RSAES_OAEP_SHA_256


_S, _U = KeySpec, KeyUsage
SPECS: dict[str, Spec] = {
    spec.key_spec.value: spec
    for spec in (
        Spec(_S.SYMMETRIC_DEFAULT, Family.SYMMETRIC, (_U.ENCRYPT_DECRYPT,), 32),
        Spec(_S.HMAC_224, Family.HMAC, (_U.GENERATE_VERIFY_MAC,), 28, "SHA224"),
        Spec(_S.HMAC_256, Family.HMAC, (_U.GENERATE_VERIFY_MAC,), 32, "SHA256"),
        Spec(_S.HMAC_384, Family.HMAC, (_U.GENERATE_VERIFY_MAC,), 48, "SHA384"),
        Spec(_S.HMAC_512, Family.HMAC, (_U.GENERATE_VERIFY_MAC,), 64, "SHA512"),
        Spec(_S.RSA_2048, Family.RSA, (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), 2048),
        Spec(_S.RSA_3072, Family.RSA, (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), 3072),
        Spec(_S.RSA_4096, Family.RSA, (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), 4096),
        Spec(_S.ECC_NIST_P256, Family.ECC, (_U.SIGN_VERIFY,), 256, "secp256r1"),
        Spec(_S.ECC_NIST_P384, Family.ECC, (_U.SIGN_VERIFY,), 384, "secp384r1"),
        Spec(_S.ECC_NIST_P521, Family.ECC, (_U.SIGN_VERIFY,), 521, "secp521r1"),
        Spec(_S.ECC_SECG_P256K1, Family.ECC, (_U.SIGN_VERIFY,), 256, "secp256k1"),
    )
}
DEFAULT_SPEC = KeySpec.SYMMETRIC_DEFAULT
DEFAULT_USAGE = KeyUsage.ENCRYPT_DECRYPT

# Key specs AWS KMS has that the portal cannot import, and why (a clear 400 rather than "not a choice").
NOT_IMPORTABLE = {
    "SM2": "SM2 keys exist only in AWS China regions; the portal does not import them.",
    "ML_DSA_44": "AWS KMS does not accept imported ML-DSA key material.",
    "ML_DSA_65": "AWS KMS does not accept imported ML-DSA key material.",
    "ML_DSA_87": "AWS KMS does not accept imported ML-DSA key material.",
}


def spec_of(key_spec: str) -> Spec:
    return SPECS[key_spec]


def validate_spec_and_usage(key_spec: str, key_usage: str | None) -> tuple[str, str]:
    """The (spec, usage) pair to create, or a ValidationError naming the field at fault.

    No usage given: the spec's only usage, or (RSA, which has two) ENCRYPT_DECRYPT as AWS defaults.
    """
    if key_spec in NOT_IMPORTABLE:
        raise ValidationError({"key_spec": NOT_IMPORTABLE[key_spec]}, code="not_importable")
    spec = SPECS.get(key_spec)
    if spec is None:
        raise ValidationError(
            {"key_spec": f"Unknown key spec {key_spec!r}; one of: {', '.join(SPECS)}."}, code="invalid_key_spec"
        )
    if not key_usage:
        return spec.key_spec.value, spec.usages[0].value
    if key_usage not in KeyUsage.values:
        raise ValidationError(
            {"key_usage": f"Unknown key usage {key_usage!r}; one of: {', '.join(KeyUsage.values)}."},
            code="invalid_key_usage",
        )
    if key_usage not in spec.usages:
        allowed = " or ".join(spec.usages)
        raise ValidationError(
            {"key_usage": f"A {key_spec} key cannot be used for {key_usage}; AWS allows {allowed}."},
            code="invalid_pair",
        )
    return spec.key_spec.value, key_usage
