"""Keys with several material versions (SPEC §10) through the rest of the lifecycle, against the sandbox.

AWS needs every permanently associated material of a key before the key works, so
deactivate deletes every one, activate and upload re-import every missing one
(``EXISTING_KEY_MATERIAL`` with its KeyMaterialId), cancel deletion deletes every one,
download returns every one, and cleanup destroys every sealed copy. Ciphertexts are
made and checked by a boto3 client in the customer's account, as an application would.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.utils import timezone

from byok_portal.vocabulary import KeyState
from keys import custody, services
from keys.jobs import reconcile
from keys.models import Key, KeyMaterial, MaterialState
from tests.keys.helpers import kms_client, public_pem, rsa_private_key, sandbox_view

pytestmark = pytest.mark.django_db
SYSTEM = services.Actor.system("test")


def rotated(key: Key) -> KeyMaterial:
    """Rotate the key (the operation under test in test_rotation.py); its new current version."""
    services.key_rotate(actor=SYSTEM, key_id=key.pk)
    return KeyMaterial.objects.get(key=key, state=MaterialState.CURRENT)


def aws_materials(client: Any, key: Key) -> list[tuple[str, str, str]]:
    rotations = client.list_key_rotations(KeyId=key.kms_key_arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    return [(r["KeyMaterialId"], r["KeyMaterialState"], r["ImportState"]) for r in rotations]


def decrypts(client: Any, ciphertext: bytes) -> bytes:
    return bytes(client.decrypt(CiphertextBlob=ciphertext)["Plaintext"])


def test_a_new_symmetric_key_has_version_1_with_awss_material_id(people: Any, keystore: Any, aws_sandbox: str) -> None:
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key
    client = kms_client(aws_sandbox, keystore)

    [version] = key.materials.all()
    current_id = client.describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert (version.version, version.state, version.kcv) == (1, MaterialState.CURRENT, key.kcv)
    assert version.kms_key_material_id == current_id
    assert aws_materials(client, key) == [(current_id, "CURRENT", "IMPORTED")]
    rotations = client.list_key_rotations(KeyId=key.kms_key_arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert rotations[0]["KeyMaterialDescription"] == f"byok-portal key {key.pk} version 1"


def test_deactivate_deletes_every_material_and_activate_brings_all_back(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    client = kms_client(aws_sandbox, keystore)
    under_v1 = client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"written in January")["CiphertextBlob"]
    v2 = rotated(key)
    under_v2 = client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"written in July")["CiphertextBlob"]

    services.key_deactivate(actor=bob, key_id=key.pk)
    ids = list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("kms_key_material_id", flat=True))
    assert aws_materials(client, key) == [
        (ids[0], "NON_CURRENT", "PENDING_IMPORT"),
        (ids[1], "CURRENT", "PENDING_IMPORT"),
    ]
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"

    key = services.key_activate(actor=bob, key_id=key.pk).key
    assert key.state == KeyState.ACTIVE
    assert [m[2] for m in aws_materials(client, key)] == ["IMPORTED", "IMPORTED"]
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert decrypts(client, under_v1) == b"written in January"
    assert decrypts(client, under_v2) == b"written in July"
    assert client.describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]["CurrentKeyMaterialId"] == v2.kms_key_material_id


def test_a_material_deleted_behind_the_portals_back_is_reported_and_upload_repairs_it(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    client = kms_client(aws_sandbox, keystore)
    under_v1 = client.encrypt(KeyId=key.kms_key_arn, Plaintext=b"old")["CiphertextBlob"]
    rotated(key)
    v1 = KeyMaterial.objects.get(key=key, version=1)
    client.delete_imported_key_material(KeyId=key.kms_key_arn, KeyMaterialId=v1.kms_key_material_id)

    assert reconcile.reconcile_key(key.pk, actor=SYSTEM) == reconcile.KeyResult.DRIFT
    key.refresh_from_db()
    assert any("version 1" in finding and "not imported" in finding for finding in key.drift), key.drift

    key = services.key_upload(actor=bob, key_id=key.pk).key
    assert key.drift == []
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert decrypts(client, under_v1) == b"old"
    assert reconcile.reconcile_key(key.pk, actor=SYSTEM) == reconcile.KeyResult.IN_STEP


def test_cancel_deletion_deletes_every_material(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    rotated(key)
    services.key_schedule_deletion(actor=bob, key_id=key.pk)

    key = services.key_cancel_deletion(actor=bob, key_id=key.pk).key

    assert key.state == KeyState.INACTIVE
    client = kms_client(aws_sandbox, keystore)
    assert [m[2] for m in aws_materials(client, key)] == ["PENDING_IMPORT", "PENDING_IMPORT"]
    key = services.key_activate(actor=bob, key_id=key.pk).key
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"


def test_download_returns_every_version_and_the_current_one_on_top(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    v1_kcv = key.kcv
    v2 = rotated(key)
    services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem())

    download = services.key_download(actor=carol, key_id=key.pk)

    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    unwrapped = {w.version: rsa_private_key().decrypt(w.wrapped_key_material, oaep) for w in download.materials}
    assert [(w.version, w.state, w.kcv) for w in download.materials] == [
        (1, MaterialState.NON_CURRENT, v1_kcv),
        (2, MaterialState.CURRENT, v2.kcv),
    ]
    assert {v: custody.kcv(m) for v, m in unwrapped.items()} == {1: v1_kcv, 2: v2.kcv}
    assert (download.version, download.kcv) == (2, v2.kcv)
    assert rsa_private_key().decrypt(download.wrapped_key_material, oaep) == unwrapped[2]


def test_cleanup_destroys_every_versions_sealed_copy(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    rotated(key)
    services.key_schedule_deletion(actor=bob, key_id=key.pk)

    services.key_cleanup(actor=SYSTEM, key_id=key.pk, now=timezone.now() + dt.timedelta(days=40))

    rows = list(KeyMaterial.objects.filter(key=key).order_by("version").values_list("version", "material_sealed"))
    assert rows == [(1, None), (2, None)]


def test_a_sealed_version_opens_only_as_its_own_key_and_version() -> None:
    import uuid

    from keys.custody import CustodyError

    key_id, material = uuid.uuid4(), custody.generate_material()
    blob = custody.seal(key_id, material, 2)
    assert custody.unseal(key_id, blob, 2) == material
    with pytest.raises(CustodyError):
        custody.unseal(key_id, blob, 1)
    with pytest.raises(CustodyError):
        custody.unseal(uuid.uuid4(), blob, 2)
