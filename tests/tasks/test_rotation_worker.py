"""The rotation policy's beat tasks on a real Celery worker, on the real Redis, against the sandbox AWS (SPEC §10).

Beat sends ``keys.tasks.rotate_due_keys`` and ``keys.tasks.reimport_expiring_materials`` by name,
as ``celery_client`` does here; the worker is a separate process with the test database and the
sandbox's URL. What AWS holds afterwards is read with the key owner's own boto3 client.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from django.utils import timezone

from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.vocabulary import Operation
from keys import services
from keys.models import Key, KeyMaterial, MaterialState
from tests.keys.helpers import current_material

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RESULT_TIMEOUT = 90


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def no_material_in_redis(redis_url: str, *materials: bytes) -> None:
    """Task arguments and results sit in Redis in plain text: no material may be among them."""
    client = redis.Redis.from_url(redis_url)
    try:
        stored = b""
        for name in client.scan_iter():
            kind = client.type(name)
            if kind == b"string":
                stored += as_bytes(client.get(name) or b"")
            elif kind == b"list":
                stored += b"".join(as_bytes(item) for item in client.lrange(name, 0, -1))
        for material in materials:
            for form in (material, material.hex().encode(), material.hex().upper().encode()):
                assert form not in stored
    finally:
        client.close()


def test_a_due_key_is_rotated_by_the_beat_task_on_a_real_worker(
    people: Any, keystore: Any, backdoor: Any, start_worker: Any, celery_client: Any, redis_url: str
) -> None:
    bob = people.actor(people.bob)
    due = services.key_create(actor=bob, keystore_id=keystore.pk, name="due", rotation_period_days=90).key
    later = services.key_create(actor=bob, keystore_id=keystore.pk, name="later", rotation_period_days=90).key
    Key.objects.filter(pk=due.pk).update(next_rotation_date=timezone.localdate() - dt.timedelta(days=1))
    first_material = bytes(current_material(due))
    client = backdoor(keystore)
    under_v1 = client.encrypt(KeyId=due.kms_key_arn, Plaintext=b"before the rotation")["CiphertextBlob"]
    start_worker(BYOK_ROTATION_PACE_SECONDS="0")

    result = celery_client.send_task("keys.tasks.rotate_due_keys").get(timeout=RESULT_TIMEOUT)

    assert result == {"rotated": 1, "renewed": 0, "flagged": 0, "awaiting_approval": 0, "skipped": 0, "failed": 0}
    rotations = client.list_key_rotations(KeyId=due.kms_key_arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    versions = list(KeyMaterial.objects.filter(key=due).order_by("version"))
    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in rotations] == [
        (versions[0].kms_key_material_id, "NON_CURRENT"),
        (versions[1].kms_key_material_id, "CURRENT"),
    ]
    assert rotations[1]["RotationType"] == "ON_DEMAND"
    assert client.describe_key(KeyId=due.kms_key_arn)["KeyMetadata"]["CurrentKeyMaterialId"] == (
        versions[1].kms_key_material_id
    )
    assert [v.state for v in versions] == [MaterialState.NON_CURRENT, MaterialState.CURRENT]
    due.refresh_from_db()
    assert (due.material_version, due.rotations) == (2, 1)
    assert due.next_rotation_date == timezone.localdate() + dt.timedelta(days=90)
    assert client.decrypt(CiphertextBlob=under_v1)["Plaintext"] == b"before the rotation"
    assert KeyMaterial.objects.filter(key=later).count() == 1  # not due: untouched

    event = AuditEvent.objects.get(key_id=due.pk, operation=Operation.ROTATE)
    assert (event.outcome, event.actor_sub, event.details["version"]) == ("success", "rotation", 2)
    assert len(event.kms_request_ids) >= 4
    assert verify().ok
    no_material_in_redis(redis_url, first_material, bytes(current_material(due)))


def test_expiring_material_is_reimported_by_the_beat_task_on_a_real_worker(
    people: Any, keystore: Any, backdoor: Any, start_worker: Any, celery_client: Any, redis_url: str
) -> None:
    bob = people.actor(people.bob)
    near = services.key_create(actor=bob, keystore_id=keystore.pk, name="near", material_valid_days=30).key
    rotated = services.key_rotate(actor=bob, key_id=near.pk).key
    given = services.key_create(actor=bob, keystore_id=keystore.pk, name="given").key
    calm = services.key_create(actor=bob, keystore_id=keystore.pk, name="calm", material_valid_days=30).key
    # "near": the portal knows version 1 expires within the margin; "given": a policy set after its import.
    KeyMaterial.objects.filter(key=rotated, version=1).update(valid_to=timezone.now() + dt.timedelta(hours=5))
    Key.objects.filter(pk=given.pk).update(material_valid_days=7)
    calm_expiry = KeyMaterial.objects.get(key=calm).valid_to
    client = backdoor(keystore)
    start_worker(BYOK_ROTATION_PACE_SECONDS="0")

    sent_at = timezone.now()
    result = celery_client.send_task("keys.tasks.reimport_expiring_materials").get(timeout=RESULT_TIMEOUT)

    assert result == {"reimported": 2, "skipped": 0, "failed": 0}
    for key, days, versions in ((near, 30, 2), (given, 7, 1)):
        rotations = client.list_key_rotations(KeyId=key.kms_key_arn, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
        assert len(rotations) == versions
        stored = dict(KeyMaterial.objects.filter(key=key).values_list("kms_key_material_id", "valid_to"))
        for entry in rotations:
            assert entry["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
            expected = sent_at + dt.timedelta(days=days)
            assert dt.timedelta(0) <= entry["ValidTo"] - expected < dt.timedelta(seconds=RESULT_TIMEOUT)
            assert abs(stored[entry["KeyMaterialId"]] - entry["ValidTo"]) < dt.timedelta(seconds=1)
        event = AuditEvent.objects.get(key_id=key.pk, operation=Operation.REIMPORT)
        assert (event.outcome, event.actor_sub) == ("success", "reimport")
        assert event.details["versions"] == list(range(1, versions + 1))
    assert KeyMaterial.objects.get(key=calm).valid_to == calm_expiry
    assert not AuditEvent.objects.filter(key_id=calm.pk, operation=Operation.REIMPORT).exists()
    assert verify().ok
    no_material_in_redis(redis_url, *(bytes(current_material(k)) for k in (near, given, calm)))
