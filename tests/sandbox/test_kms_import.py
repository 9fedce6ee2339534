"""GetParametersForImport / ImportKeyMaterial / DeleteImportedKeyMaterial as AWS documents them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import cmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms

import sandbox_aws.kms

from .conftest import error_code, wrap_material


def kcv(material: bytes) -> str:
    mac = cmac.CMAC(algorithms.AES(material))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_external_key_is_created_pending_import_without_material(kms: Any, inspect_key: Callable[..., Any]) -> None:
    metadata = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]

    assert metadata["KeyState"] == "PendingImport"
    assert metadata["Enabled"] is False
    described = kms.describe_key(KeyId=metadata["KeyId"])["KeyMetadata"]
    assert described["Origin"] == "EXTERNAL"
    assert described["KeyState"] == "PendingImport"
    assert inspect_key(metadata["KeyId"])["has_material"] is False


@pytest.mark.parametrize(("spec", "bits"), [("RSA_2048", 2048), ("RSA_3072", 3072), ("RSA_4096", 4096)])
def test_get_parameters_for_import_returns_a_fresh_wrapping_key_and_token_valid_24_hours(
    kms: Any, external_key: str, spec: str, bits: int
) -> None:
    first = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec=spec
    )
    second = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec=spec
    )

    public_key = serialization.load_der_public_key(first["PublicKey"])
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == bits
    assert first["PublicKey"] != second["PublicKey"]
    assert first["ImportToken"] != second["ImportToken"]
    assert first["KeyId"].endswith(f":key/{external_key}")
    expected_valid_to = datetime.now(UTC) + timedelta(hours=24)
    assert abs(first["ParametersValidTo"] - expected_valid_to) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("algorithm", "code"),
    [
        ("RSAES_PKCS1_V1_5", "ValidationException"),
        ("SM2PKE", "UnsupportedOperationException"),
    ],
)
def test_get_parameters_for_import_refuses_retired_and_unsupported_wrapping_algorithms(
    kms: Any, external_key: str, algorithm: str, code: str
) -> None:
    with pytest.raises(ClientError) as excinfo:
        kms.get_parameters_for_import(KeyId=external_key, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")

    assert error_code(excinfo) == code


def test_get_parameters_for_import_is_refused_for_keys_with_kms_generated_material(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    with pytest.raises(ClientError) as excinfo:
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")

    assert error_code(excinfo) == "UnsupportedOperationException"


def test_get_parameters_for_import_is_refused_while_pending_deletion(kms: Any, external_key: str) -> None:
    kms.schedule_key_deletion(KeyId=external_key, PendingWindowInDays=7)

    with pytest.raises(ClientError) as excinfo:
        kms.get_parameters_for_import(
            KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )

    assert error_code(excinfo) == "KMSInvalidStateException"


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
def test_import_enables_the_key_and_encryption_uses_the_imported_material(
    kms: Any, external_key: str, import_material: Callable[..., Any], inspect_key: Callable[..., Any], algorithm: str
) -> None:
    material = os.urandom(32)

    import_material(external_key, material, algorithm=algorithm)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "Enabled"
    summary = inspect_key(external_key)
    assert summary["has_material"] is True
    assert summary["material_sha256"] == hashlib.sha256(material).hexdigest()
    assert summary["kcv"] == kcv(material)
    ciphertext = kms.encrypt(KeyId=external_key, Plaintext=b"hello")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"hello"


def test_import_token_is_refused_for_another_key(kms: Any, external_key: str) -> None:
    other_key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(
        KeyId=other_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    assert error_code(excinfo) == "InvalidImportTokenException"


def test_material_wrapped_with_another_calls_public_key_is_an_invalid_ciphertext(kms: Any, external_key: str) -> None:
    first, second = (
        kms.get_parameters_for_import(
            KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        for _ in range(2)
    )

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=second["ImportToken"],
            EncryptedKeyMaterial=wrap_material(first["PublicKey"], os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    assert error_code(excinfo) == "InvalidCiphertextException"
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_material_wrapped_with_the_wrong_oaep_hash_is_an_invalid_ciphertext(kms: Any, external_key: str) -> None:
    params = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], os.urandom(32), "RSAES_OAEP_SHA_1"),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    assert error_code(excinfo) == "InvalidCiphertextException"


def test_import_token_expires_after_24_hours(kms: Any, external_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    params = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    monkeypatch.setattr(sandbox_aws.kms, "utc_now", lambda: later)

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    assert error_code(excinfo) == "ExpiredImportTokenException"


@pytest.mark.parametrize("length", [16, 31, 33, 64])
def test_symmetric_material_must_be_32_bytes(
    external_key: str, import_material: Callable[..., Any], length: int
) -> None:
    with pytest.raises(ClientError) as excinfo:
        import_material(external_key, os.urandom(length))

    assert error_code(excinfo) == "IncorrectKeyMaterialException"


def test_reimport_of_the_same_material_is_accepted(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)

    import_material(external_key, material, ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=in_days(30))

    metadata = kms.describe_key(KeyId=external_key)["KeyMetadata"]
    assert metadata["KeyState"] == "Enabled"
    assert metadata["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"


def test_reimport_of_different_material_is_refused(
    external_key: str, import_material: Callable[..., Any], inspect_key: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)

    with pytest.raises(ClientError) as excinfo:
        import_material(external_key, os.urandom(32))

    assert error_code(excinfo) == "IncorrectKeyMaterialException"
    assert inspect_key(external_key)["material_sha256"] == hashlib.sha256(material).hexdigest()


@pytest.mark.parametrize(
    "expiration",
    [
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES"},
        {},  # KEY_MATERIAL_EXPIRES is the default, so ValidTo is required
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": in_days(-1)},
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": in_days(366)},
        {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "ValidTo": in_days(30)},
    ],
    ids=[
        "expires-without-valid-to",
        "default-without-valid-to",
        "valid-to-past",
        "valid-to-too-far",
        "no-expiry-with-valid-to",
    ],
)
def test_import_validates_expiration_model_and_valid_to(
    kms: Any, external_key: str, expiration: dict[str, Any]
) -> None:
    params = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], os.urandom(32)),
            **expiration,
        )

    assert error_code(excinfo) == "ValidationException"
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_describe_key_reports_expiration_model_and_valid_to(
    kms: Any, external_key: str, import_material: Callable[..., Any], inspect_key: Callable[..., Any]
) -> None:
    valid_to = in_days(365) - timedelta(minutes=1)

    import_material(external_key, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)

    metadata = kms.describe_key(KeyId=external_key)["KeyMetadata"]
    assert metadata["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(metadata["ValidTo"] - valid_to) < timedelta(seconds=1)
    assert inspect_key(external_key)["expiration_model"] == "KEY_MATERIAL_EXPIRES"
    assert inspect_key(external_key)["valid_to"] is not None


def test_material_is_deleted_when_it_expires(
    kms: Any, external_key: str, import_material: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import_material(external_key, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=in_days(1))
    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    monkeypatch.setattr(sandbox_aws.kms, "utc_now", lambda: later)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_delete_imported_key_material_returns_the_key_to_pending_import(
    kms: Any, external_key: str, import_material: Callable[..., Any], inspect_key: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)
    ciphertext = kms.encrypt(KeyId=external_key, Plaintext=b"kept")["CiphertextBlob"]
    kms.disable_key(KeyId=external_key)

    kms.delete_imported_key_material(KeyId=external_key)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"
    summary = inspect_key(external_key)
    assert (summary["has_material"], summary["material_sha256"], summary["kcv"]) == (False, None, None)
    with pytest.raises(ClientError) as excinfo:
        import_material(external_key, os.urandom(32))
    assert error_code(excinfo) == "IncorrectKeyMaterialException"
    import_material(external_key, material)
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"kept"


def test_reimport_after_material_deletion_enables_the_key(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)
    kms.disable_key(KeyId=external_key)
    kms.delete_imported_key_material(KeyId=external_key)

    import_material(external_key, material)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_reimport_into_a_disabled_key_with_material_keeps_it_disabled(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)
    kms.disable_key(KeyId=external_key)

    import_material(external_key, material)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_delete_imported_key_material_is_unsupported_for_kms_generated_keys(kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    with pytest.raises(ClientError) as excinfo:
        kms.delete_imported_key_material(KeyId=key_id)

    assert error_code(excinfo) == "UnsupportedOperationException"


def test_import_is_refused_while_pending_deletion(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    params = kms.get_parameters_for_import(
        KeyId=external_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    kms.schedule_key_deletion(KeyId=external_key, PendingWindowInDays=7)

    with pytest.raises(ClientError) as excinfo:
        kms.import_key_material(
            KeyId=external_key,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], os.urandom(32)),
            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        )

    assert error_code(excinfo) == "KMSInvalidStateException"
