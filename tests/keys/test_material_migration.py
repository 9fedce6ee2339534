"""Keys from before material versions become version 1, and reconciliation learns their KeyMaterialId (SPEC §10).

The migration moves each key's sealed blob as it is (format 1, bound to the key id only)
and needs no KEK; custody opens such a blob as version 1, and the KEK rotation re-seals it.
"""

from __future__ import annotations

import secrets
from io import StringIO
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from keys import custody, services
from keys.jobs import reconcile
from keys.models import KeyMaterial
from tests.keys.helpers import kms_client, sandbox_view

BEFORE = [("keys", "0003_key_spec_usage_public_key")]
AFTER = [("keys", "0004_key_material_versions")]  # then every app's latest (going back unapplied its dependants)


def sealed_as_before_versions(key_id: Any, material: bytes) -> bytes:
    """A blob exactly as custody sealed material before versions existed (format 1, key id in the AAD)."""
    kek = custody.current_kek()
    nonce = secrets.token_bytes(12)
    aad = b"byok-portal/material/v1/" + key_id.bytes
    return b"\x01" + kek.fingerprint + nonce + AESGCM(kek.key).encrypt(nonce, material, aad)


def migrate(target: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    if target == AFTER:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_a_key_from_before_versions_migrates_to_version_1_and_keeps_working(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="legacy").key
    material = custody.unseal_software(key.pk, KeyMaterial.objects.get(key=key).material_sealed or b"", 1)
    # The key as it was stored before this change: a format-1 blob, no KeyMaterialId known.
    KeyMaterial.objects.filter(key=key).update(
        material_sealed=sealed_as_before_versions(key.pk, bytes(material)), kms_key_material_id=""
    )
    try:
        migrate(BEFORE)  # back: the blob goes to keys_key.material_sealed, the versions table goes
        with connection.cursor() as cursor:
            cursor.execute("SELECT material_sealed FROM keys_key WHERE id = %s", [key.pk])
            assert bytes(cursor.fetchone()[0])[:1] == b"\x01"
    finally:
        migrate(AFTER)

    [version] = KeyMaterial.objects.filter(key=key)
    assert (version.version, version.state, version.kcv, version.kms_key_material_id) == (1, "CURRENT", key.kcv, "")
    assert custody.kcv(custody.unseal(key.pk, version.material_sealed or b"", 1)) == key.kcv

    assert reconcile.reconcile_key(key.pk, actor=services.Actor.system("test")) == reconcile.KeyResult.IN_STEP
    version.refresh_from_db()
    current_id = kms_client(aws_sandbox, keystore).describe_key(KeyId=key.kms_key_arn)["KeyMetadata"]
    assert version.kms_key_material_id == current_id["CurrentKeyMaterialId"]

    services.key_deactivate(actor=bob, key_id=key.pk)
    services.key_activate(actor=bob, key_id=key.pk)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"

    call_command("byok_rotate_kek", stdout=StringIO())  # brings the blob to the current format
    version.refresh_from_db()
    assert custody.sealed_with_current_kek(bytes(version.material_sealed or b""))
    assert custody.kcv(custody.unseal(key.pk, version.material_sealed or b"", 1)) == key.kcv
