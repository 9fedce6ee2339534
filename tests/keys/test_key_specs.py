"""Key specs and usages (SPEC §9): AWS's pairs, material per spec, check values, and the doors.

The allowed pairs are restated here from the SPEC, not imported, so a wrong row in
``keys/specs.py`` fails a test instead of agreeing with itself.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from byok_portal.vocabulary import Operation
from keys import custody, lifecycle
from keys.lifecycle import UnsupportedForKeySpec, allowed_operations, decide
from keys.models import Key
from keys.specs import SPECS, validate_spec_and_usage

# SPEC §9's table: key_spec -> the usages AWS allows.
SPEC_PAIRS = {
    "SYMMETRIC_DEFAULT": {"ENCRYPT_DECRYPT"},
    "HMAC_224": {"GENERATE_VERIFY_MAC"},
    "HMAC_256": {"GENERATE_VERIFY_MAC"},
    "HMAC_384": {"GENERATE_VERIFY_MAC"},
    "HMAC_512": {"GENERATE_VERIFY_MAC"},
    "RSA_2048": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "RSA_3072": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "RSA_4096": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "ECC_NIST_P256": {"SIGN_VERIFY"},
    "ECC_NIST_P384": {"SIGN_VERIFY"},
    "ECC_NIST_P521": {"SIGN_VERIFY"},
    "ECC_SECG_P256K1": {"SIGN_VERIFY"},
}
USAGES = {"ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "SIGN_VERIFY"}
URL = "/api/v1/keys/"


def test_the_specs_and_their_pairs_are_awss() -> None:
    assert {name: set(spec.usages) for name, spec in SPECS.items()} == SPEC_PAIRS


@pytest.mark.parametrize("key_spec", sorted(SPEC_PAIRS))
def test_every_pair_is_accepted_and_every_other_refused_naming_the_usage(key_spec: str) -> None:
    for usage in USAGES:
        if usage in SPEC_PAIRS[key_spec]:
            assert validate_spec_and_usage(key_spec, usage) == (key_spec, usage)
            continue
        with pytest.raises(ValidationError) as refused:
            validate_spec_and_usage(key_spec, usage)
        assert list(refused.value.message_dict) == ["key_usage"]


@pytest.mark.parametrize(
    ("key_spec", "default_usage"),
    [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P384", "SIGN_VERIFY"),
    ],
)
def test_without_a_usage_a_spec_gets_awss_default(key_spec: str, default_usage: str) -> None:
    assert validate_spec_and_usage(key_spec, None) == (key_spec, default_usage)


@pytest.mark.parametrize(("key_spec", "length"), [("SYMMETRIC_DEFAULT", 32), ("HMAC_224", 28), ("HMAC_256", 32),
                                                   ("HMAC_384", 48), ("HMAC_512", 64)])  # fmt: skip
def test_symmetric_and_hmac_material_is_random_bytes_of_the_specs_length(key_spec: str, length: int) -> None:
    samples = {bytes(custody.generate_software_material(key_spec)) for _ in range(8)}
    assert {len(s) for s in samples} == {length}
    assert len(samples) == 8


@pytest.mark.parametrize(
    ("key_spec", "expected"),
    [
        ("RSA_2048", 2048),
        ("RSA_3072", 3072),
        ("RSA_4096", 4096),
        ("ECC_NIST_P256", "secp256r1"),
        ("ECC_NIST_P384", "secp384r1"),
        ("ECC_NIST_P521", "secp521r1"),
        ("ECC_SECG_P256K1", "secp256k1"),
    ],
)
def test_asymmetric_material_is_a_pkcs8_der_private_key_of_the_spec(key_spec: str, expected: Any) -> None:
    material = bytes(custody.generate_software_material(key_spec))
    private_key = serialization.load_der_private_key(material, password=None)
    # PKCS#8 exactly (not PKCS#1 or SEC1): re-encoding it as PKCS#8 gives the same bytes.
    assert (
        private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        == material
    )
    if isinstance(expected, int):
        assert isinstance(private_key, rsa.RSAPrivateKey)
        assert (private_key.key_size, private_key.public_key().public_numbers().e) == (expected, 65537)
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        assert private_key.curve.name == expected


@pytest.mark.parametrize(
    ("key_spec", "digest"),
    [("HMAC_224", hashlib.sha224), ("HMAC_256", hashlib.sha256), ("HMAC_384", hashlib.sha384),
     ("HMAC_512", hashlib.sha512)],
)  # fmt: skip
def test_the_hmac_kcv_is_an_hmac_of_sixteen_zero_bytes_under_the_keys_own_hash(key_spec: str, digest: Any) -> None:
    material = custody.generate_software_material(key_spec)
    checks = custody.check_values(key_spec, material)
    assert checks.kcv == hmac.new(bytes(material), bytes(16), digest).digest()[:3].hex().upper()
    assert (checks.public_key, checks.public_key_sha256) == ("", "")


def test_an_asymmetric_keys_check_values_are_its_public_key_and_its_digest() -> None:
    material = custody.generate_software_material("ECC_NIST_P256")
    checks = custody.check_values("ECC_NIST_P256", material)
    private_key = serialization.load_der_private_key(bytes(material), password=None)
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert checks.kcv == ""
    assert checks.public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert (
        serialization.load_pem_public_key(checks.public_key.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == der
    )
    assert checks.public_key_sha256 == hashlib.sha256(der).hexdigest()


def test_asymmetric_material_is_sealed_like_any_other_bound_to_its_key() -> None:
    material = custody.generate_material("RSA_2048")
    key_id = uuid.uuid4()
    sealed = custody.seal(key_id, material)
    assert custody.unseal(key_id, sealed) == material
    with pytest.raises(custody.CustodyError):
        custody.unseal(uuid.uuid4(), sealed)


def test_an_operation_a_spec_cannot_do_is_neither_offered_nor_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifecycle table's ``specs`` column: every row holds for every spec but rotation (§10), symmetric only."""
    assert all(row.specs == frozenset(SPECS) for op, row in lifecycle.LIFECYCLE.items() if op != Operation.ROTATE)
    assert lifecycle.LIFECYCLE[Operation.ROTATE].specs == frozenset({"SYMMETRIC_DEFAULT"})
    symmetric_only = lifecycle.LIFECYCLE[Operation.UPLOAD].__class__(
        **{**lifecycle.LIFECYCLE[Operation.UPLOAD].__dict__, "specs": frozenset({"SYMMETRIC_DEFAULT"})}
    )
    monkeypatch.setitem(lifecycle.LIFECYCLE, Operation.UPLOAD, symmetric_only)
    assert Operation.UPLOAD in allowed_operations("ACTIVE", "SYMMETRIC_DEFAULT")
    assert Operation.UPLOAD not in allowed_operations("ACTIVE", "HMAC_256")
    assert decide(Operation.UPLOAD, "ACTIVE", "SYMMETRIC_DEFAULT") is True
    with pytest.raises(UnsupportedForKeySpec) as refused:
        decide(Operation.UPLOAD, "ACTIVE", "HMAC_256")
    assert (refused.value.status, refused.value.code) == (409, "unsupported_for_key_spec")


@pytest.mark.django_db
def test_the_database_refuses_a_pair_aws_does_not_allow(keystore: Any) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Key.objects.create(keystore=keystore, name="bad", key_spec="ECC_NIST_P256", key_usage="ENCRYPT_DECRYPT")
