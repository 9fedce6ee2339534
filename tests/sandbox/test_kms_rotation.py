"""Several key materials per KMS key, as AWS has them since June 2025, over HTTP through boto3.

ImportType / KeyMaterialId / KeyMaterialDescription, material states, RotateKeyOnDemand
(25 at most, ConflictException while one runs), ListKeyRotations with IncludeKeyMaterial
and paging, DescribeKey's CurrentKeyMaterialId, DeleteImportedKeyMaterial with an id, the
rule that a key works only while every permanently associated material is present, and
ciphertexts that name their material.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox_aws import kms as sandbox_kms
from tests.sandbox.conftest import error_code

ALL = "ALL_KEY_MATERIAL"


def rotations(kms: Any, key_id: str, include: str = ALL, **kwargs: Any) -> list[dict[str, Any]]:
    return list(kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial=include, **kwargs)["Rotations"])


def state(kms: Any, key_id: str) -> str:
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


def rotate_to_new(kms: Any, import_material: Callable[..., Any], key_id: str) -> str:
    answer = import_material(key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    kms.rotate_key_on_demand(KeyId=key_id)
    return str(answer["KeyMaterialId"])


def test_material_ids_are_64_hex_derived_from_key_and_material(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    first = import_material(external_key, material, ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="v 1")
    again = import_material(external_key, material, ImportType="EXISTING_KEY_MATERIAL")
    other_key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    elsewhere = import_material(other_key, material)

    assert re.fullmatch(r"[0-9a-f]{64}", first["KeyMaterialId"])
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert elsewhere["KeyMaterialId"] != first["KeyMaterialId"]  # the key id is part of it
    assert material.hex() not in first["KeyMaterialId"]
    meta = kms.describe_key(KeyId=external_key)["KeyMetadata"]
    assert (meta["KeyState"], meta["CurrentKeyMaterialId"]) == ("Enabled", first["KeyMaterialId"])
    [entry] = rotations(kms, external_key)
    assert (entry["KeyMaterialState"], entry["ImportState"], entry["KeyMaterialDescription"]) == (
        "CURRENT",
        "IMPORTED",
        "v 1",
    )


def test_rotation_keeps_old_ciphertexts_and_lists_every_material(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    v1 = import_material(external_key, os.urandom(32))["KeyMaterialId"]
    old = kms.encrypt(KeyId=external_key, Plaintext=b"before")["CiphertextBlob"]
    pending = import_material(external_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]

    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in rotations(kms, external_key)] == [
        (v1, "CURRENT"),
        (pending, "PENDING_ROTATION"),
    ]
    assert rotations(kms, external_key, "ROTATIONS_ONLY") == []  # the first and pending ones are hidden
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["CurrentKeyMaterialId"] == v1

    kms.rotate_key_on_demand(KeyId=external_key)
    new = kms.encrypt(KeyId=external_key, Plaintext=b"after")["CiphertextBlob"]

    listed = rotations(kms, external_key)
    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in listed] == [(v1, "NON_CURRENT"), (pending, "CURRENT")]
    assert listed[1]["RotationType"] == "ON_DEMAND"
    assert "RotationDate" in listed[1]
    assert "RotationDate" not in listed[0]
    assert [r["KeyMaterialId"] for r in rotations(kms, external_key, "ROTATIONS_ONLY")] == [pending]
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["CurrentKeyMaterialId"] == pending
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"before"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"after"


def test_a_key_works_only_while_every_permanent_material_is_there(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    v1_material = os.urandom(32)
    v1 = import_material(external_key, v1_material)["KeyMaterialId"]
    old = kms.encrypt(KeyId=external_key, Plaintext=b"old")["CiphertextBlob"]
    rotate_to_new(kms, import_material, external_key)
    new = kms.encrypt(KeyId=external_key, Plaintext=b"new")["CiphertextBlob"]

    deleted = kms.delete_imported_key_material(KeyId=external_key, KeyMaterialId=v1)
    assert deleted["KeyMaterialId"] == v1
    assert state(kms, external_key) == "PendingImport"
    with pytest.raises(ClientError) as refused:
        kms.decrypt(CiphertextBlob=new)  # even the current material's ciphertexts: the key is unusable
    assert error_code(refused) == "KMSInvalidStateException"
    assert [r["ImportState"] for r in rotations(kms, external_key)] == ["PENDING_IMPORT", "IMPORTED"]

    with pytest.raises(ClientError) as wrong:
        import_material(external_key, os.urandom(32), ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=v1)
    assert error_code(wrong) == "IncorrectKeyMaterialException"
    with pytest.raises(ClientError) as no_new:
        import_material(external_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    assert error_code(no_new) == "KMSInvalidStateException"

    import_material(external_key, v1_material, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=v1)
    assert state(kms, external_key) == "Enabled"
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"


def test_deleting_without_an_id_deletes_the_current_material_and_pending_material_is_withdrawn(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    import_material(external_key, os.urandom(32))
    current = rotate_to_new(kms, import_material, external_key)
    pending = import_material(external_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]

    assert kms.delete_imported_key_material(KeyId=external_key, KeyMaterialId=pending)["KeyMaterialId"] == pending
    assert state(kms, external_key) == "Enabled"  # pending material is not permanently associated
    assert pending not in [r["KeyMaterialId"] for r in rotations(kms, external_key)]

    assert kms.delete_imported_key_material(KeyId=external_key)["KeyMaterialId"] == current
    assert state(kms, external_key) == "PendingImport"
    with pytest.raises(ClientError) as unknown:
        kms.delete_imported_key_material(KeyId=external_key, KeyMaterialId="ab" * 32)
    assert error_code(unknown) == "ValidationException"


def test_rotate_on_demand_needs_pending_material_and_stops_at_25(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    import_material(external_key, os.urandom(32))
    with pytest.raises(ClientError) as nothing:
        kms.rotate_key_on_demand(KeyId=external_key)
    assert error_code(nothing) == "ValidationException"
    for _ in range(25):
        rotate_to_new(kms, import_material, external_key)

    import_material(external_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    with pytest.raises(ClientError) as limit:
        kms.rotate_key_on_demand(KeyId=external_key)

    assert error_code(limit) == "LimitExceededException"
    assert len(rotations(kms, external_key, "ROTATIONS_ONLY", Limit=1000)) == 25


def test_list_key_rotations_pages_with_a_marker(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    import_material(external_key, os.urandom(32))
    made = [rotate_to_new(kms, import_material, external_key) for _ in range(4)]

    seen: list[str] = []
    marker: str | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"Limit": 2, **({"Marker": marker} if marker else {})}
        page = kms.list_key_rotations(KeyId=external_key, IncludeKeyMaterial=ALL, **kwargs)
        seen += [r["KeyMaterialId"] for r in page["Rotations"]]
        pages += 1
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert pages == 3
    assert seen[1:] == made
    with pytest.raises(ClientError) as bad:
        kms.list_key_rotations(KeyId=external_key, Marker="not-a-marker")
    assert error_code(bad) == "InvalidMarkerException"


def test_hmac_keys_reject_material_options_and_rotation(kms: Any, import_material: Callable[..., Any]) -> None:
    key_id = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"
    ]
    with pytest.raises(ClientError) as refused:
        import_material(key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")
    assert error_code(refused) == "ValidationException"
    answer = import_material(key_id, os.urandom(32))
    assert "KeyMaterialId" not in answer
    with pytest.raises(ClientError) as no_rotation:
        kms.rotate_key_on_demand(KeyId=key_id)
    assert error_code(no_rotation) == "UnsupportedOperationException"


def test_a_rotation_in_progress_refuses_another_with_conflict(
    kms: Any, external_key: str, import_material: Callable[..., Any]
) -> None:
    import_material(external_key, os.urandom(32))
    pending = import_material(external_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
    sandbox_kms.set_rotation_delay(3600)
    try:
        kms.rotate_key_on_demand(KeyId=external_key)
        status = kms.get_key_rotation_status(KeyId=external_key)
        assert "OnDemandRotationStartDate" in status
        with pytest.raises(ClientError) as conflict:
            kms.rotate_key_on_demand(KeyId=external_key)
        assert error_code(conflict) == "ConflictException"
        assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["CurrentKeyMaterialId"] != pending
    finally:
        sandbox_kms.set_rotation_delay(0)
    kms.describe_key(KeyId=external_key)  # the next call completes the rotation whose time has come
    assert kms.describe_key(KeyId=external_key)["KeyMetadata"]["CurrentKeyMaterialId"] == pending
    assert "OnDemandRotationStartDate" not in kms.get_key_rotation_status(KeyId=external_key)
