"""Key-state rules AWS enforces and moto does not: PendingImport, PendingDeletion, Disabled."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import error_code

OPERATIONS: dict[str, Callable[[Any, str], Any]] = {
    "EnableKey": lambda kms, key_id: kms.enable_key(KeyId=key_id),
    "DisableKey": lambda kms, key_id: kms.disable_key(KeyId=key_id),
    "Encrypt": lambda kms, key_id: kms.encrypt(KeyId=key_id, Plaintext=b"data"),
    "GenerateDataKey": lambda kms, key_id: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
}
CRYPTO_OPERATIONS = ["Encrypt", "GenerateDataKey"]


@pytest.fixture
def enabled_key(external_key: str, import_material: Callable[..., Any]) -> str:
    """An EXTERNAL key with imported material, Enabled."""
    import_material(external_key, os.urandom(32))
    return external_key


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operations_are_refused_in_pending_import(kms: Any, external_key: str, operation: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        OPERATIONS[operation](kms, external_key)

    assert error_code(excinfo) == "KMSInvalidStateException"
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operations_are_refused_in_pending_deletion(kms: Any, enabled_key: str, operation: str) -> None:
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)

    with pytest.raises(ClientError) as excinfo:
        OPERATIONS[operation](kms, enabled_key)

    assert error_code(excinfo) == "KMSInvalidStateException"
    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_decrypt_is_refused_in_pending_import_and_pending_deletion(kms: Any, enabled_key: str) -> None:
    ciphertext = kms.encrypt(KeyId=enabled_key, Plaintext=b"data")["CiphertextBlob"]
    kms.disable_key(KeyId=enabled_key)
    kms.delete_imported_key_material(KeyId=enabled_key)

    with pytest.raises(ClientError) as pending_import:
        kms.decrypt(CiphertextBlob=ciphertext)
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)
    with pytest.raises(ClientError) as pending_deletion:
        kms.decrypt(CiphertextBlob=ciphertext)

    assert error_code(pending_import) == "KMSInvalidStateException"
    assert error_code(pending_deletion) == "KMSInvalidStateException"


@pytest.mark.parametrize("operation", CRYPTO_OPERATIONS)
def test_cryptography_on_a_disabled_key_is_refused_as_disabled(kms: Any, enabled_key: str, operation: str) -> None:
    kms.disable_key(KeyId=enabled_key)

    with pytest.raises(ClientError) as excinfo:
        OPERATIONS[operation](kms, enabled_key)

    assert error_code(excinfo) == "DisabledException"


def test_enable_and_disable_switch_a_key_with_material(kms: Any, enabled_key: str) -> None:
    kms.disable_key(KeyId=enabled_key)
    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "Disabled"

    kms.enable_key(KeyId=enabled_key)
    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_schedule_key_deletion_sets_pending_deletion_and_deletion_date(
    kms: Any, enabled_key: str, inspect_key: Callable[..., Any]
) -> None:
    response = kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)

    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs(response["DeletionDate"] - expected) < timedelta(minutes=1)
    assert response["KeyState"] == "PendingDeletion"
    assert response["PendingWindowInDays"] == 7
    metadata = kms.describe_key(KeyId=enabled_key)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"
    assert metadata["DeletionDate"] == response["DeletionDate"]
    assert inspect_key(enabled_key)["deletion_date"] is not None


@pytest.mark.parametrize("days", [6, 31])
def test_schedule_key_deletion_window_must_be_7_to_30_days(kms: Any, enabled_key: str, days: int) -> None:
    with pytest.raises(ClientError) as excinfo:
        kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=days)

    assert error_code(excinfo) == "ValidationException"
    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_schedule_key_deletion_twice_is_refused(kms: Any, enabled_key: str) -> None:
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=30)

    with pytest.raises(ClientError) as excinfo:
        kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=30)

    assert error_code(excinfo) == "KMSInvalidStateException"


def test_cancel_key_deletion_returns_a_key_with_material_to_disabled(
    kms: Any, enabled_key: str, inspect_key: Callable[..., Any]
) -> None:
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)

    kms.cancel_key_deletion(KeyId=enabled_key)

    metadata = kms.describe_key(KeyId=enabled_key)["KeyMetadata"]
    assert metadata["KeyState"] == "Disabled"
    assert "DeletionDate" not in metadata
    assert inspect_key(enabled_key)["has_material"] is True


def test_cancel_key_deletion_returns_a_key_without_material_to_pending_import(kms: Any, external_key: str) -> None:
    kms.schedule_key_deletion(KeyId=external_key, PendingWindowInDays=7)

    kms.cancel_key_deletion(KeyId=external_key)

    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_material_deleted_while_pending_deletion_leaves_state_and_cancel_gives_pending_import(
    kms: Any, enabled_key: str, inspect_key: Callable[..., Any]
) -> None:
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)

    kms.delete_imported_key_material(KeyId=enabled_key)

    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert inspect_key(enabled_key)["has_material"] is False
    kms.cancel_key_deletion(KeyId=enabled_key)
    assert kms.describe_key(KeyId=enabled_key)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_cancel_key_deletion_of_a_key_not_pending_deletion_is_refused(kms: Any, enabled_key: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        kms.cancel_key_deletion(KeyId=enabled_key)

    assert error_code(excinfo) == "KMSInvalidStateException"


def test_update_alias_to_a_key_pending_deletion_is_refused(
    kms: Any, enabled_key: str, external_key: str, import_material: Callable[..., Any]
) -> None:
    new_key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_material(new_key, os.urandom(32))
    kms.create_alias(AliasName="alias/customer-key", TargetKeyId=enabled_key)
    kms.schedule_key_deletion(KeyId=new_key, PendingWindowInDays=7)

    with pytest.raises(ClientError) as excinfo:
        kms.update_alias(AliasName="alias/customer-key", TargetKeyId=new_key)

    assert error_code(excinfo) == "KMSInvalidStateException"
    aliases = kms.list_aliases(KeyId=enabled_key)["Aliases"]
    assert [alias["AliasName"] for alias in aliases] == ["alias/customer-key"]


def test_update_alias_away_from_a_key_pending_deletion_is_allowed(
    kms: Any, enabled_key: str, import_material: Callable[..., Any]
) -> None:
    new_key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_material(new_key, os.urandom(32))
    kms.create_alias(AliasName="alias/customer-key", TargetKeyId=enabled_key)
    kms.schedule_key_deletion(KeyId=enabled_key, PendingWindowInDays=7)

    kms.update_alias(AliasName="alias/customer-key", TargetKeyId=new_key)

    assert [a["AliasName"] for a in kms.list_aliases(KeyId=new_key)["Aliases"]] == ["alias/customer-key"]


def test_aliases_and_tags_work_on_keys_with_imported_material(
    kms: Any, enabled_key: str, inspect_key: Callable[..., Any]
) -> None:
    kms.create_alias(AliasName="alias/one", TargetKeyId=enabled_key)
    kms.tag_resource(KeyId=enabled_key, Tags=[{"TagKey": "team", "TagValue": "payments"}])
    kms.untag_resource(KeyId=enabled_key, TagKeys=["portal"])

    assert [a["AliasName"] for a in kms.list_aliases(KeyId=enabled_key)["Aliases"]] == ["alias/one"]
    assert kms.list_resource_tags(KeyId=enabled_key)["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]
    ciphertext = kms.encrypt(KeyId="alias/one", Plaintext=b"via alias")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"via alias"
    kms.delete_alias(AliasName="alias/one")
    summary = inspect_key(enabled_key)
    assert summary["aliases"] == []
    assert summary["tags"] == {"team": "payments"}
