"""Keystore operations: who may do them, what they check, and what they leave in the audit trail."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.errors import Conflict, NotFound, PermissionRefused
from keys import services as key_services
from keystores import services
from keystores.models import Keystore, Membership, Role
from tests.conftest import REGION, new_account_id
from tests.keys.helpers import account_admin_iam

pytestmark = pytest.mark.django_db


def events(keystore: Keystore, operation: str) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(keystore_id=keystore.pk, operation=operation)
        .order_by("seq")
        .values_list("outcome", "reason")
    )


def test_the_creator_becomes_admin_and_the_external_id_is_the_portals(people: Any, aws_sandbox: str) -> None:
    account = new_account_id()
    store = services.keystore_create(
        actor=people.actor(people.alice),
        name="Payments",
        aws_account_id=account,
        region=REGION,
        role_arn=f"arn:aws:iam::{account}:role/path/byok",
    )
    assert Membership.objects.get(keystore=store).role == Role.ADMIN
    assert store.external_id.startswith("byok-")
    assert len(store.external_id) >= 32
    assert events(store, "create_keystore") == [("success", "")]


def test_creating_a_keystore_needs_the_creator_permission(people: Any) -> None:
    account = new_account_id()
    with pytest.raises(PermissionRefused):
        services.keystore_create(
            actor=people.actor(people.bob),
            name="x",
            aws_account_id=account,
            region=REGION,
            role_arn=f"arn:aws:iam::{account}:role/byok",
        )
    refusal = AuditEvent.objects.get(operation="create_keystore")
    assert (refusal.outcome, refusal.reason, refusal.actor_sub) == ("refused", "permission_denied", "bob")


@pytest.mark.parametrize(
    ("account", "region", "role_arn", "field"),
    [
        ("12345678901", REGION, "arn:aws:iam::12345678901:role/x", "aws_account_id"),
        ("123456789012", "mars-north-1", "arn:aws:iam::123456789012:role/x", "region"),
        ("123456789012", REGION, "arn:aws:iam::210987654321:role/x", "role_arn"),
        ("123456789012", REGION, "arn:aws:iam::123456789012:user/x", "role_arn"),
    ],
    ids=["short-account", "unknown-region", "role-in-other-account", "not-a-role"],
)
def test_bad_keystore_input_names_the_field(people: Any, account: str, region: str, role_arn: str, field: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        services.keystore_create(
            actor=people.actor(people.alice), name="x", aws_account_id=account, region=region, role_arn=role_arn
        )
    assert field in invalid.value.message_dict
    assert not Keystore.objects.exists()


def test_regions_come_from_botocore_across_partitions() -> None:
    from keystores.models import kms_regions

    assert {"us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"} <= set(kms_regions())


def test_account_region_and_external_id_cannot_be_edited(people: Any, keystore: Any) -> None:
    with pytest.raises(ValidationError) as invalid:
        services.keystore_update(actor=people.actor(people.alice), keystore_id=keystore.pk, aws_account_id="1" * 12)
    assert "aws_account_id" in invalid.value.message_dict
    updated = services.keystore_update(actor=people.actor(people.alice), keystore_id=keystore.pk, name="Renamed")
    assert updated.name == "Renamed"
    with pytest.raises(PermissionRefused):
        services.keystore_update(actor=people.actor(people.bob), keystore_id=keystore.pk, name="Mine")
    with pytest.raises(NotFound):
        services.keystore_update(actor=people.actor(people.eve), keystore_id=keystore.pk, name="Mine")
    assert events(keystore, "update_keystore") == [
        ("success", ""),
        ("refused", "permission_denied"),
        ("refused", "permission_denied"),
    ]


def test_a_keystore_with_live_keys_cannot_be_deleted_and_its_trail_outlives_it(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    alice, bob = people.actor(people.alice), people.actor(people.bob)
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/k").key
    with pytest.raises(Conflict) as refused:
        services.keystore_delete(actor=alice, keystore_id=keystore.pk)
    assert refused.value.extra["live_keys"] == 1

    key_services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)
    key_services.key_cleanup(actor=bob, key_id=key.pk, now=timezone.now() + dt.timedelta(days=8))
    deleted = services.keystore_delete(actor=alice, keystore_id=keystore.pk)
    again = services.keystore_delete(actor=alice, keystore_id=keystore.pk)
    assert (deleted.state, again.state) == ("DELETED", "DELETED")
    assert events(keystore, "delete_keystore") == [("refused", "invalid_state"), ("success", ""), ("noop", "")]

    trail = AuditEvent.objects.filter(key_id=key.pk).order_by("seq")
    assert list(trail.values_list("operation", flat=True)) == ["create", "schedule_deletion", "cleanup"]
    assert {e.key_alias for e in trail} == {"alias/k"}  # meaningful after deletion: alias and ARN copied in
    assert all(e.key_arn == key.kms_key_arn for e in trail)
    assert verify().ok


def test_test_connection_records_success_and_awss_error_verbatim(
    people: Any, keystore: Any, aws_sandbox: str, settings: Any
) -> None:
    ok = services.keystore_test_connection(actor=people.actor(people.bob), keystore_id=keystore.pk)
    assert (ok.last_check_ok, ok.last_check_error) == (True, "")

    iam = account_admin_iam(aws_sandbox, keystore.aws_account_id, REGION)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": "someone-elses-id"}},
            }
        ],
    }
    iam.update_assume_role_policy(RoleName="byok-portal", PolicyDocument=json.dumps(policy))
    failed = services.keystore_test_connection(actor=people.actor(people.bob), keystore_id=keystore.pk)
    assert failed.last_check_ok is False
    assert failed.last_check_error.startswith("AssumeRole: AccessDenied: ")
    assert events(keystore, "test_connection") == [("success", ""), ("failed", "AccessDenied")]
    event = AuditEvent.objects.filter(operation="test_connection").order_by("-seq").first()
    assert event is not None
    assert event.error == failed.last_check_error


def test_the_generated_policies_pin_the_external_id_and_scope_keys_to_the_portals_tag(
    keystore: Any, settings: Any
) -> None:
    policies = services.iam_policies(keystore)
    trust = policies["trust_policy"]["Statement"][0]
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": keystore.external_id}}
    assert trust["Principal"] == {"AWS": settings.BYOK_AWS_PRINCIPAL_ARN}
    statements = {s["Sid"]: s for s in policies["permissions_policy"]["Statement"]}
    create = statements["CreateOnlyExternalKeysTaggedForThePortal"]
    assert create["Condition"]["StringEquals"] == {"kms:KeyOrigin": "EXTERNAL"}
    manage = statements["ManagePortalKeys"]
    assert manage["Resource"] == f"arn:aws:kms:{REGION}:{keystore.aws_account_id}:key/*"
    assert manage["Condition"] == {"StringLike": {f"aws:ResourceTag/{settings.BYOK_TAG_KEY}": "*"}}
    granted = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # Exactly the calls byok_portal/aws.py makes, and nothing like kms:Decrypt or kms:PutKeyPolicy.
    assert granted == {
        "kms:CreateKey",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:DescribeKey",
        "kms:GetParametersForImport",
        "kms:ImportKeyMaterial",
        "kms:DeleteImportedKeyMaterial",
        "kms:EnableKey",
        "kms:DisableKey",
        "kms:ScheduleKeyDeletion",
        "kms:CancelKeyDeletion",
        "kms:ListResourceTags",
        "kms:GetPublicKey",
        "kms:ListKeyRotations",
        "kms:RotateKeyOnDemand",
        "kms:CreateAlias",
        "kms:UpdateAlias",
        "kms:DeleteAlias",
        "kms:ListAliases",
        "kms:ListKeys",
    }


def test_the_last_admin_cannot_be_removed(people: Any, keystore: Any) -> None:
    alice = people.actor(people.alice)
    with pytest.raises(Conflict):
        services.membership_remove(actor=alice, keystore_id=keystore.pk, user=people.alice)
    services.membership_remove(actor=alice, keystore_id=keystore.pk, user=people.dan)
    assert not Membership.objects.filter(keystore=keystore, user=people.dan).exists()
    assert events(keystore, "revoke")[-1] == ("success", "")
