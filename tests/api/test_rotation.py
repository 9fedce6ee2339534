"""Native rotation of imported material (SPEC §10) through the API, with ciphertexts made by an application.

The application is a boto3 client in the customer's account talking to the sandbox over
HTTP: what it encrypted before a rotation must decrypt after it, and after the key was
deactivated and activated again (every material back in KMS).
"""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from keys import services
from keys.jobs import reconcile
from keys.models import Key, KeyMaterial
from tests.keys.helpers import kms_client, sandbox_view

pytestmark = pytest.mark.django_db
URL = "/api/v1/keys/"


@pytest.fixture(autouse=True)
def _fast_wrapping_keys(settings: Any) -> None:
    # Each import has the sandbox generate a wrapping key pair; RSA_4096 makes 25 rotations slow for nothing here.
    settings.BYOK_IMPORT_WRAPPING_KEY_SPEC = "RSA_2048"


def test_old_ciphertexts_decrypt_after_rotation_and_after_deactivate_and_activate(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = api_as(people.bob)
    key = bob.post(URL, {"keystore": str(keystore.pk), "name": "orders", "alias": "alias/orders"}, expect=201).json()
    app = kms_client(aws_sandbox, keystore)
    under_v1 = app.encrypt(KeyId="alias/orders", Plaintext=b"card 4111")["CiphertextBlob"]

    rotated = bob.post(f"{URL}{key['id']}/rotate/", {}, expect=200).json()

    assert rotated["kms_key_arn"] == key["kms_key_arn"]  # the same KMS key: applications change nothing
    assert (rotated["material_version"], rotated["rotations"], key["material_version"]) == (2, 1, 1)
    assert rotated["kcv"] != key["kcv"]
    under_v2 = app.encrypt(KeyId="alias/orders", Plaintext=b"card 5500")["CiphertextBlob"]
    materials = bob.get(f"{URL}{key['id']}/materials/", expect=200).json()["results"]
    assert [(m["version"], m["state"], m["kcv"]) for m in materials] == [
        (1, "NON_CURRENT", key["kcv"]),
        (2, "CURRENT", rotated["kcv"]),
    ]
    current = app.describe_key(KeyId=key["kms_key_arn"])["KeyMetadata"]["CurrentKeyMaterialId"]
    assert materials[1]["kms_key_material_id"] == current
    assert all(
        "material_sealed" not in m
        and set(m) == {"version", "kms_key_material_id", "kcv", "state", "imported_at", "rotated_at", "valid_to"}
        for m in materials
    )

    bob.post(f"{URL}{key['id']}/deactivate/", {}, expect=200)
    assert sandbox_view(aws_sandbox, Key.objects.get(pk=key["id"]))["key_state"] == "PendingImport"
    bob.post(f"{URL}{key['id']}/activate/", {}, expect=200)

    assert app.decrypt(CiphertextBlob=under_v1)["Plaintext"] == b"card 4111"
    assert app.decrypt(CiphertextBlob=under_v2)["Plaintext"] == b"card 5500"
    event = AuditEvent.objects.get(key_id=key["id"], operation="rotate")
    assert (event.outcome, event.details["version"], event.details["previous_version"]) == ("success", 2, 1)
    assert event.kms_request_ids
    assert (
        reconcile.reconcile_key(Key.objects.get(pk=key["id"]).pk, actor=services.Actor.system("t"))
        == reconcile.KeyResult.IN_STEP
    )


def test_the_26th_rotation_is_refused_with_rotation_limit_saying_to_renew(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = api_as(people.bob)
    key = bob.post(URL, {"keystore": str(keystore.pk), "name": "busy"}, expect=201).json()
    for _ in range(25):
        bob.post(f"{URL}{key['id']}/rotate/", {}, expect=200)

    refused = bob.post(f"{URL}{key['id']}/rotate/", {}, expect=409).json()

    assert refused["code"] == "rotation_limit"
    assert "Renew" in refused["detail"]
    stored = Key.objects.get(pk=key["id"])
    assert (stored.material_version, stored.rotations, stored.state) == (26, 25, KeyState.ACTIVE)
    assert not KeyMaterial.objects.filter(key=stored, state="PENDING_ROTATION").exists()
    assert [m["state"] for m in sandbox_view(aws_sandbox, stored)["materials"]].count("PENDING_ROTATION") == 0
    assert AuditEvent.objects.filter(key_id=stored.pk, operation="rotate", outcome="refused").count() == 1
    # Renewing is what the refusal suggests, and it works.
    bob.post(f"{URL}{key['id']}/renew/", {}, expect=201)


def test_aws_refusing_the_rotation_limit_is_the_same_409_and_leaves_nothing_pending(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """Rotations made outside the portal count too: AWS's LimitExceededException becomes rotation_limit."""
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    Key.objects.filter(pk=key.pk).update(rotations=0)
    app = kms_client(aws_sandbox, keystore)
    from byok_portal import aws
    from keys import custody

    kms = aws.kms_for(keystore)
    for _ in range(25):  # someone rotating behind the portal's back
        material = custody.generate_material()
        kms.import_material(key.kms_key_id, material, import_type="NEW_KEY_MATERIAL")
        app.rotate_key_on_demand(KeyId=key.kms_key_arn)

    with pytest.raises(services.Conflict) as refused:
        services.key_rotate(actor=bob, key_id=key.pk)

    assert refused.value.code == "rotation_limit"
    assert [m["state"] for m in sandbox_view(aws_sandbox, key)["materials"]].count("PENDING_ROTATION") == 1
    # The staged material stays until reconciliation withdraws it (the rotation's process is gone).
    assert services.resolve_staged_rotation(actor=services.Actor.system("t"), key_id=key.pk) == "withdrawn"
    assert [m["state"] for m in sandbox_view(aws_sandbox, key)["materials"]].count("PENDING_ROTATION") == 0
    assert not KeyMaterial.objects.filter(key=key, state="PENDING_ROTATION").exists()


def test_an_hmac_key_cannot_rotate(api_as: Any, people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = api_as(people.bob)
    key = bob.post(URL, {"keystore": str(keystore.pk), "name": "mac", "key_spec": "HMAC_256"}, expect=201).json()
    assert "rotate" not in key["allowed_operations"]
    refused = bob.post(f"{URL}{key['id']}/rotate/", {}, expect=409).json()
    assert refused["code"] == "unsupported_for_key_spec"
    assert not KeyMaterial.objects.filter(key_id=key["id"], state="PENDING_ROTATION").exists()


def test_an_interrupted_rotation_that_aws_finished_is_recorded_by_reconciliation(
    people: Any, keystore: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    """The process died after RotateKeyOnDemand: the staged version is AWS's current, so it is finished, not lost."""
    from keys import materials

    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("the worker died")

    monkeypatch.setattr(materials, "finish_rotation", crash)
    with pytest.raises(SystemExit):
        services.key_rotate(actor=bob, key_id=key.pk)
    monkeypatch.undo()
    assert KeyMaterial.objects.filter(key=key, state="PENDING_ROTATION").exists()  # committed before KMS acted

    assert reconcile.reconcile_key(key.pk, actor=services.Actor.system("t")) == reconcile.KeyResult.IN_STEP
    key.refresh_from_db()
    assert (key.material_version, key.rotations) == (2, 1)
    assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv
    assert AuditEvent.objects.filter(key_id=key.pk, operation="reconcile", reason="rotation_finished").count() == 1


def test_the_key_page_shows_the_versions_and_the_rotation_policy(people: Any, keystore: Any, aws_sandbox: str) -> None:
    from tests.web import verified_client

    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", rotation_period_days=90).key
    services.key_rotate(actor=bob, key_id=key.pk)
    key.refresh_from_db()

    page = verified_client(people.bob).get(f"/keys/{key.pk}/").content.decode()

    assert 'aria-label="Material versions"' in page
    for version in KeyMaterial.objects.filter(key=key):
        assert version.kcv in page
    assert "every 90 days" in page
    assert key.next_rotation_date is not None
    assert key.next_rotation_date.isoformat() in page
    assert "Rotate material" in page  # the button, with its confirmation text from the lifecycle row
    assert "AWS allows 25 rotations per key" in page
