"""The sandbox KMS with HMAC and asymmetric EXTERNAL keys, as AWS behaves (SPEC §9).

Material is generated and wrapped here independently of the portal's code, the way any
client of AWS would: RSA-OAEP for random bytes, RSA_AES_KEY_WRAP (RSA-OAEP of an AES key,
then AES key wrap with padding, RFC 5649) for a PKCS#8 private key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RSAES_OAEP_SHA_256": hashes.SHA256,
    "RSAES_OAEP_SHA_1": hashes.SHA1,
    "RSA_AES_KEY_WRAP_SHA_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_SHA_1": hashes.SHA1,
}
_rsa_cache: dict[int, rsa.RSAPrivateKey] = {}


def pkcs8(private_key: Any) -> bytes:
    return bytes(
        private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    if bits not in _rsa_cache:
        _rsa_cache[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _rsa_cache[bits]


def material_for(key_spec: str, *, fresh: bool = False) -> bytes:
    """Material of ``key_spec``; RSA keys are reused across tests (slow to make) unless ``fresh``."""
    if key_spec.startswith("HMAC_"):
        return os.urandom(int(key_spec.removeprefix("HMAC_")) // 8)
    if key_spec.startswith("RSA_"):
        bits = int(key_spec.removeprefix("RSA_"))
        return pkcs8(rsa.generate_private_key(public_exponent=65537, key_size=bits) if fresh else rsa_key(bits))
    curve: ec.EllipticCurve = {
        "ECC_NIST_P256": ec.SECP256R1(),
        "ECC_NIST_P384": ec.SECP384R1(),
        "ECC_NIST_P521": ec.SECP521R1(),
        "ECC_SECG_P256K1": ec.SECP256K1(),
    }[key_spec]
    return pkcs8(ec.generate_private_key(curve))


def wrap(public_key_der: bytes, material: bytes, algorithm: str) -> bytes:
    public_key = serialization.load_der_public_key(public_key_der)
    assert isinstance(public_key, rsa.RSAPublicKey)
    digest = HASHES[algorithm]
    oaep = padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return public_key.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return public_key.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)


def create(kms: Any, key_spec: str, key_usage: str) -> str:
    return str(kms.create_key(Origin="EXTERNAL", KeySpec=key_spec, KeyUsage=key_usage)["KeyMetadata"]["KeyId"])


def do_import(
    kms: Any, key_id: str, material: bytes, algorithm: str, wrapping_key_spec: str = "RSA_3072", **extra: Any
) -> Any:
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=wrapping_key_spec)
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], material, algorithm),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        **extra,
    )


def code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


KINDS = [
    ("HMAC_224", "GENERATE_VERIFY_MAC", "RSAES_OAEP_SHA_256"),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "RSAES_OAEP_SHA_1"),
    ("HMAC_384", "GENERATE_VERIFY_MAC", "RSAES_OAEP_SHA_256"),
    ("HMAC_512", "GENERATE_VERIFY_MAC", "RSAES_OAEP_SHA_256"),
    ("RSA_2048", "ENCRYPT_DECRYPT", "RSA_AES_KEY_WRAP_SHA_256"),
    ("RSA_3072", "SIGN_VERIFY", "RSA_AES_KEY_WRAP_SHA_1"),
    ("RSA_4096", "SIGN_VERIFY", "RSA_AES_KEY_WRAP_SHA_256"),
    ("ECC_NIST_P256", "SIGN_VERIFY", "RSAES_OAEP_SHA_256"),
    ("ECC_NIST_P384", "SIGN_VERIFY", "RSA_AES_KEY_WRAP_SHA_256"),
    ("ECC_NIST_P521", "SIGN_VERIFY", "RSA_AES_KEY_WRAP_SHA_1"),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", "RSA_AES_KEY_WRAP_SHA_256"),
]


@pytest.mark.parametrize(("key_spec", "key_usage", "algorithm"), KINDS, ids=[k[0] for k in KINDS])
def test_external_keys_of_every_spec_take_their_material(
    kms: Any, inspect_key: Any, key_spec: str, key_usage: str, algorithm: str
) -> None:
    key_id = create(kms, key_spec, key_usage)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["KeySpec"], meta["KeyUsage"], meta["Origin"]) == (
        "PendingImport",
        key_spec,
        key_usage,
        "EXTERNAL",
    )
    material = material_for(key_spec)
    do_import(kms, key_id, material, algorithm)
    summary = inspect_key(key_id)
    assert (summary["key_state"], summary["material_sha256"]) == ("Enabled", hashlib.sha256(material).hexdigest())
    # Re-import of the same material after deletion works; of other material, never.
    kms.delete_imported_key_material(KeyId=key_id)
    with pytest.raises(ClientError) as refused:
        do_import(kms, key_id, material_for(key_spec, fresh=True), algorithm)
    assert code(refused) == "IncorrectKeyMaterialException"
    do_import(kms, key_id, material, algorithm)
    assert inspect_key(key_id)["key_state"] == "Enabled"


@pytest.mark.parametrize("key_spec", ["RSA_2048", "RSA_3072", "RSA_4096"])
@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
def test_rsa_private_keys_need_an_rsa_aes_wrapping(kms: Any, key_spec: str, algorithm: str) -> None:
    key_id = create(kms, key_spec, "SIGN_VERIFY")
    with pytest.raises(ClientError) as refused:
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_4096")
    assert code(refused) == "UnsupportedOperationException"
    assert "RSA_AES" in refused.value.response["Error"]["Message"]


def test_plain_rsa_oaep_under_rsa_2048_cannot_carry_p521_material(kms: Any) -> None:
    key_id = create(kms, "ECC_NIST_P521", "SIGN_VERIFY")
    material = material_for("ECC_NIST_P521")
    assert len(material) > 190  # more than RSA-OAEP-SHA-256 with a 2048-bit key can carry
    with pytest.raises(ClientError) as refused:
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    assert code(refused) == "UnsupportedOperationException"
    do_import(kms, key_id, material, "RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_4096")  # a larger key fits it


@pytest.mark.parametrize(
    ("key_spec", "wrong"),
    [
        ("RSA_2048", lambda: pkcs8(rsa_key(3072))),
        ("ECC_NIST_P256", lambda: material_for("ECC_NIST_P384")),
        ("ECC_SECG_P256K1", lambda: material_for("ECC_NIST_P256")),
        ("RSA_2048", lambda: material_for("ECC_NIST_P256")),
        (
            "RSA_2048",  # PKCS#1, not PKCS#8
            lambda: rsa_key(2048).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        ),
        ("HMAC_256", lambda: os.urandom(31)),
        ("HMAC_512", lambda: os.urandom(129)),
    ],
    ids=["rsa-size", "ec-curve", "k1-vs-p256", "ec-into-rsa", "pkcs1", "hmac-short", "hmac-long"],
)
def test_material_is_checked_against_the_key_spec(kms: Any, inspect_key: Any, key_spec: str, wrong: Any) -> None:
    usage = "GENERATE_VERIFY_MAC" if key_spec.startswith("HMAC") else "SIGN_VERIFY"
    key_id = create(kms, key_spec, usage)
    algorithm = "RSAES_OAEP_SHA_256" if key_spec.startswith("HMAC") else "RSA_AES_KEY_WRAP_SHA_256"
    with pytest.raises(ClientError) as refused:
        do_import(kms, key_id, wrong(), algorithm)
    assert code(refused) == "IncorrectKeyMaterialException"
    assert inspect_key(key_id)["key_state"] == "PendingImport"


@pytest.mark.parametrize(
    "option",
    [
        {"ImportType": "EXISTING_KEY_MATERIAL"},
        {"KeyMaterialId": "a" * 64},
        {"KeyMaterialDescription": "first"},
    ],
    ids=["ImportType", "KeyMaterialId", "KeyMaterialDescription"],
)
@pytest.mark.parametrize("key_spec", ["HMAC_256", "ECC_NIST_P256"])
def test_import_options_of_symmetric_keys_are_refused_for_other_specs(
    kms: Any, inspect_key: Any, key_spec: str, option: dict[str, str]
) -> None:
    usage = "GENERATE_VERIFY_MAC" if key_spec.startswith("HMAC") else "SIGN_VERIFY"
    key_id = create(kms, key_spec, usage)
    with pytest.raises(ClientError) as refused:
        do_import(kms, key_id, material_for(key_spec), "RSA_AES_KEY_WRAP_SHA_256", **option)
    assert code(refused) == "ValidationException"
    assert next(iter(option)) in refused.value.response["Error"]["Message"]
    assert inspect_key(key_id)["key_state"] == "PendingImport"


def test_generate_mac_and_verify_mac_use_the_imported_material(kms: Any) -> None:
    key_id = create(kms, "HMAC_384", "GENERATE_VERIFY_MAC")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["MacAlgorithms"], "EncryptionAlgorithms" in meta) == (["HMAC_SHA_384"], False)
    material = material_for("HMAC_384")
    do_import(kms, key_id, material, "RSAES_OAEP_SHA_256")
    mac = kms.generate_mac(KeyId=key_id, Message=b"payment 42", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert mac == hmac.new(material, b"payment 42", hashlib.sha384).digest()
    verified = kms.verify_mac(KeyId=key_id, Message=b"payment 42", MacAlgorithm="HMAC_SHA_384", Mac=mac)
    assert verified["MacValid"] is True
    with pytest.raises(ClientError) as wrong_algorithm:
        kms.generate_mac(KeyId=key_id, Message=b"x", MacAlgorithm="HMAC_SHA_256")
    assert code(wrong_algorithm) == "InvalidKeyUsageException"


def test_sign_verify_and_get_public_key_use_the_imported_private_key(kms: Any) -> None:
    key_id = create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    private_key = ec.generate_private_key(ec.SECP256R1())
    do_import(kms, key_id, pkcs8(private_key), "RSA_AES_KEY_WRAP_SHA_256")
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    assert der == private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = kms.sign(KeyId=key_id, Message=b"release 1.0", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    private_key.public_key().verify(signature, b"release 1.0", ec.ECDSA(hashes.SHA256()))  # raises if not ours
    assert kms.verify(KeyId=key_id, Message=b"release 1.0", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")[
        "SignatureValid"
    ]


def test_rsa_encrypt_and_decrypt_use_the_imported_key(kms: Any) -> None:
    key_id = create(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    do_import(kms, key_id, pkcs8(private_key), "RSA_AES_KEY_WRAP_SHA_256")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    local = private_key.public_key().encrypt(b"card data", oaep)
    decrypted = kms.decrypt(KeyId=key_id, CiphertextBlob=local, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert decrypted["Plaintext"] == b"card data"
    remote = kms.encrypt(KeyId=key_id, Plaintext=b"pin block", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert private_key.decrypt(remote["CiphertextBlob"], oaep) == b"pin block"


@pytest.mark.parametrize("state", ["Disabled", "PendingImport"])
def test_cryptography_needs_an_enabled_key(kms: Any, state: str) -> None:
    signer = create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    mac_key = create(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    do_import(kms, signer, material_for("ECC_NIST_P256"), "RSA_AES_KEY_WRAP_SHA_256")
    do_import(kms, mac_key, material_for("HMAC_256"), "RSAES_OAEP_SHA_256")
    for key_id in (signer, mac_key):
        kms.disable_key(KeyId=key_id)
        if state == "PendingImport":
            kms.delete_imported_key_material(KeyId=key_id)
    expected = "DisabledException" if state == "Disabled" else "KMSInvalidStateException"
    calls = [
        lambda: kms.sign(KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.get_public_key(KeyId=signer),
        lambda: kms.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as refused:
            call()
        assert code(refused) == expected


def test_a_symmetric_key_has_no_public_key(kms: Any, external_key: str, import_material: Any) -> None:
    import_material(external_key, os.urandom(32))
    with pytest.raises(ClientError) as refused:
        kms.get_public_key(KeyId=external_key)
    assert code(refused) == "UnsupportedOperationException"


def test_symmetric_encryption_still_works_as_before(kms: Any, external_key: str, import_material: Any) -> None:
    import_material(external_key, os.urandom(32))
    blob = kms.encrypt(KeyId=external_key, Plaintext=b"hello")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"hello"


def test_update_alias_keeps_to_keys_of_one_type_and_usage(kms: Any) -> None:
    """API reference, UpdateAlias: both keys symmetric, both HMAC or both asymmetric, with the same usage."""
    first, second = create(kms, "RSA_2048", "SIGN_VERIFY"), create(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    other_usage, mac = create(kms, "RSA_3072", "ENCRYPT_DECRYPT"), create(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    kms.create_alias(AliasName="alias/signing", TargetKeyId=first)
    kms.update_alias(AliasName="alias/signing", TargetKeyId=second)  # RSA and EC: both asymmetric, same usage
    for refused_target in (other_usage, mac):
        with pytest.raises(ClientError) as refused:
            kms.update_alias(AliasName="alias/signing", TargetKeyId=refused_target)
        assert code(refused) == "ValidationException"
    aliases = kms.list_aliases(KeyId=second)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/signing"]
