"""``material_valid_days`` and the keystore's default rotation policy through the API (SPEC §10).

Bad values answer 400 naming the field and AWS's bounds; good ones reach KMS (the material's
ValidTo, read with the owner's boto3) and the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from keys.models import Key, KeyMaterial
from tests.keys.helpers import kms_client

pytestmark = pytest.mark.django_db
KEYS = "/api/v1/keys/"
KEYSTORES = "/api/v1/keystores/"


@pytest.fixture(autouse=True)
def _fast_wrapping_keys(settings: Any) -> None:
    settings.BYOK_IMPORT_WRAPPING_KEY_SPEC = "RSA_2048"


@pytest.mark.parametrize("days", [0, 366, -5, "soon", 2.5])
def test_a_bad_validity_is_refused_with_the_field_and_why(days: Any, api_as: Any, people: Any, keystore: Any) -> None:
    bob, alice = api_as(people.bob), api_as(people.alice)
    created = bob.post(KEYS, {"keystore": str(keystore.pk), "name": "k", "material_valid_days": days}, expect=400)
    assert "365" in created.json()["material_valid_days"][0]
    assert not Key.objects.exists()
    default = alice.patch(f"{KEYSTORES}{keystore.pk}/", {"material_valid_days": days}, expect=400).json()
    assert "365" in default["material_valid_days"][0]


def test_a_keys_validity_is_set_changed_and_removed_through_the_api(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = api_as(people.bob)
    key = bob.post(KEYS, {"keystore": str(keystore.pk), "name": "k", "material_valid_days": 10}, expect=201).json()
    assert key["material_valid_days"] == 10
    app = kms_client(aws_sandbox, keystore)
    meta = app.describe_key(KeyId=key["kms_key_arn"])["KeyMetadata"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(meta["ValidTo"] - (timezone.now() + dt.timedelta(days=10))) < dt.timedelta(minutes=1)
    [listed] = bob.get(f"{KEYS}{key['id']}/materials/", expect=200).json()["results"]
    assert dt.datetime.fromisoformat(listed["valid_to"].replace("Z", "+00:00")) == KeyMaterial.objects.get().valid_to

    bad = bob.patch(f"{KEYS}{key['id']}/", {"material_valid_days": 400}, expect=400).json()
    assert set(bad) == {"material_valid_days"}
    assert (
        bob.patch(f"{KEYS}{key['id']}/", {"material_valid_days": None}, expect=200).json()["material_valid_days"]
        is None
    )
    event = AuditEvent.objects.filter(key_id=key["id"], operation="update").latest("seq")
    assert event.details["changed"] == {"valid_days": {"from": 10, "to": None}}


def test_the_keystores_default_rotation_policy_is_read_changed_and_given_to_new_keys(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    alice, bob = api_as(people.alice), api_as(people.bob)
    before = alice.get(f"{KEYSTORES}{keystore.pk}/", expect=200).json()
    assert (before["rotation_period_days"], before["rotation_on_limit"], before["material_valid_days"]) == (
        None,
        "flag",
        None,
    )
    policy = {"rotation_period_days": 180, "rotation_on_limit": "renew", "material_valid_days": 90}
    after = alice.patch(f"{KEYSTORES}{keystore.pk}/", policy, expect=200).json()
    assert {name: after[name] for name in policy} == policy
    assert set(alice.patch(f"{KEYSTORES}{keystore.pk}/", {"rotation_period_days": 30}, expect=400).json()) == {
        "rotation_period_days"
    }
    assert bob.patch(f"{KEYSTORES}{keystore.pk}/", {"material_valid_days": 5}, expect=403).json()["code"] == (
        "permission_denied"
    )
    event = AuditEvent.objects.filter(keystore_id=keystore.pk, operation="update_keystore", outcome="success").latest(
        "seq"
    )
    assert event.details["changed"]["valid_days"] == {"from": None, "to": 90}

    key = bob.post(KEYS, {"keystore": str(keystore.pk), "name": "k"}, expect=201).json()
    assert {name: key[name] for name in policy} == policy
    assert key["next_rotation_date"] == (timezone.localdate() + dt.timedelta(days=180)).isoformat()
