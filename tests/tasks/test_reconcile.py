"""Reconciliation: KMS changed behind the portal's back (with the owner's own boto3), found, stored and audited."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys import services
from keys.jobs.reconcile import KeyResult, RateLimiter, reconcile_everything, reconcile_key, reconcile_keystore
from keys.models import Key, PendingCreation
from tests.keys.helpers import sandbox_view

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("reconcile")


@pytest.fixture(autouse=True)
def _no_rate_limit(settings: Any) -> None:
    settings.BYOK_RECONCILE_KMS_CALLS_PER_SECOND = 0


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(
        actor=people.actor(people.bob),
        keystore_id=keystore.pk,
        name="orders",
        alias="alias/orders",
        tags={"app": "shop"},
    ).key


def reconcile_events(key: Key) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(operation=Operation.RECONCILE, key_id=key.pk).order_by("seq"))


def reconciled(key: Key) -> tuple[str, Key]:
    result = reconcile_key(key.pk, actor=SYSTEM)
    return result, Key.objects.get(pk=key.pk)


def test_a_key_in_step_with_kms_gets_checked_and_nothing_is_audited(key: Key) -> None:
    result, key = reconciled(key)

    assert result == KeyResult.IN_STEP
    assert (key.kms_state, key.drift) == (KmsState.ENABLED, [])
    assert key.kms_checked_at is not None
    assert timezone.now() - key.kms_checked_at < dt.timedelta(minutes=1)
    assert reconcile_events(key) == []


def test_it_flags_an_active_key_whose_kms_key_lost_its_material(key: Key, backdoor: Any) -> None:
    backdoor(key.keystore).delete_imported_key_material(KeyId=key.kms_key_id)  # e.g. an AWS power failure

    result, key = reconciled(key)

    assert result == KeyResult.DRIFT
    assert key.kms_state == KmsState.EMPTY
    assert key.state == KeyState.ACTIVE
    assert len(key.drift) == 1
    assert "no key material" in key.drift[0]
    [event] = reconcile_events(key)
    assert (event.outcome, event.reason) == (Outcome.SUCCESS, "drift_found")
    assert event.details["codes"] == ["material_missing"]
    assert event.details["drift"] == key.drift
    assert event.kms_request_ids


def test_it_flags_a_key_disabled_in_aws(key: Key, backdoor: Any) -> None:
    backdoor(key.keystore).disable_key(KeyId=key.kms_key_id)

    result, key = reconciled(key)

    assert (result, key.kms_state) == (KeyResult.DRIFT, KmsState.DISABLED)
    assert key.drift == ["The KMS key was disabled in AWS although the portal key is ACTIVE."]


def test_it_flags_a_key_scheduled_for_deletion_directly_in_aws(key: Key, backdoor: Any) -> None:
    backdoor(key.keystore).schedule_key_deletion(KeyId=key.kms_key_id, PendingWindowInDays=7)

    result, key = reconciled(key)

    assert (result, key.kms_state, key.state) == (KeyResult.DRIFT, KmsState.PENDING_DELETION, KeyState.ACTIVE)
    assert "scheduled for deletion directly in AWS" in key.drift[0]


def test_it_flags_a_deletion_cancelled_in_aws(people: Any, key: Key, backdoor: Any) -> None:
    services.key_schedule_deletion(actor=people.actor(people.bob), key_id=key.pk, pending_window_days=7)
    backdoor(key.keystore).cancel_key_deletion(KeyId=key.kms_key_id)

    result, key = reconciled(key)

    assert (result, key.kms_state) == (KeyResult.DRIFT, KmsState.DISABLED)
    assert "deletion was cancelled outside the portal" in key.drift[0]


def test_it_flags_an_alias_moved_to_another_kms_key(key: Key, backdoor: Any) -> None:
    kms = backdoor(key.keystore)
    other = kms.create_key()["KeyMetadata"]
    kms.update_alias(AliasName="alias/orders", TargetKeyId=other["KeyId"])

    result, key = reconciled(key)

    assert result == KeyResult.DRIFT
    assert key.drift == [f"The alias alias/orders points to another KMS key in AWS: {other['Arn']}."]


def test_it_flags_a_missing_alias(key: Key, backdoor: Any) -> None:
    backdoor(key.keystore).delete_alias(AliasName="alias/orders")

    _, key = reconciled(key)

    assert key.drift == ["The alias alias/orders no longer exists in AWS."]


def test_it_flags_tags_changed_in_aws(key: Key, backdoor: Any) -> None:
    kms = backdoor(key.keystore)
    kms.untag_resource(KeyId=key.kms_key_id, TagKeys=["app"])

    _, key = reconciled(key)

    assert key.drift == ["The KMS key's tags were changed in AWS: missing app."]


def test_it_flags_a_kms_key_that_is_gone(key: Key, purge: Any) -> None:
    purge(key)

    result, key = reconciled(key)

    assert (result, key.kms_state) == (KeyResult.DRIFT, KmsState.MISSING)
    assert key.drift == [
        f"The KMS key {key.kms_key_arn} no longer exists in AWS (NotFoundException). Recreate it in KMS with "
        "this key's material."
    ]
    assert [(e.reason, e.details["codes"]) for e in reconcile_events(key)] == [("drift_found", ["kms_key_gone"])]


def test_a_key_pending_deletion_whose_kms_key_was_deleted_is_not_drift(people: Any, key: Key, purge: Any) -> None:
    services.key_schedule_deletion(actor=people.actor(people.bob), key_id=key.pk, pending_window_days=7)
    purge(key)

    result, key = reconciled(key)

    assert (result, key.drift) == (KeyResult.IN_STEP, [])


def test_unchanged_drift_is_audited_once_and_its_resolution_once_more(key: Key, backdoor: Any) -> None:
    kms = backdoor(key.keystore)
    kms.disable_key(KeyId=key.kms_key_id)
    reconciled(key)
    reconciled(key)
    assert [e.reason for e in reconcile_events(key)] == ["drift_found"]

    kms.delete_alias(AliasName="alias/orders")
    _, changed = reconciled(key)
    assert len(changed.drift) == 2

    kms.enable_key(KeyId=key.kms_key_id)
    kms.create_alias(AliasName="alias/orders", TargetKeyId=key.kms_key_id)
    result, key = reconciled(key)

    assert (result, key.drift, key.kms_state) == (KeyResult.IN_STEP, [], KmsState.ENABLED)
    events = reconcile_events(key)
    assert [e.reason for e in events] == ["drift_found", "drift_changed", "drift_resolved"]
    assert events[-1].details["previous_drift"] == changed.drift


def test_a_keystore_with_auto_reupload_gets_its_material_back(key: Key, backdoor: Any, aws_sandbox: str) -> None:
    key.keystore.auto_reupload = True
    key.keystore.save(update_fields=["auto_reupload"])
    backdoor(key.keystore).delete_imported_key_material(KeyId=key.kms_key_id)

    result, key = reconciled(key)

    assert result == KeyResult.REPAIRED
    assert (key.kms_state, key.drift) == (KmsState.ENABLED, [])
    view = sandbox_view(aws_sandbox, key)
    assert (view["key_state"], view["kcv"]) == ("Enabled", key.kcv)
    events = AuditEvent.objects.filter(key_id=key.pk, seq__gte=reconcile_events(key)[0].seq).order_by("seq")
    assert [(e.operation, e.reason) for e in events] == [("reconcile", "drift_found"), ("upload", "")]
    assert events[0].details["auto_reupload"] is True


def test_auto_reupload_can_be_switched_on_for_every_keystore(key: Key, backdoor: Any, settings: Any) -> None:
    settings.BYOK_AUTO_REUPLOAD = True
    backdoor(key.keystore).delete_imported_key_material(KeyId=key.kms_key_id)

    assert reconciled(key)[0] == KeyResult.REPAIRED


def test_without_auto_reupload_an_empty_key_is_only_flagged(key: Key, backdoor: Any, aws_sandbox: str) -> None:
    backdoor(key.keystore).delete_imported_key_material(KeyId=key.kms_key_id)

    reconciled(key)

    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"
    assert not AuditEvent.objects.filter(key_id=key.pk, operation=Operation.UPLOAD).exists()


def test_an_observation_overtaken_by_a_lifecycle_operation_is_dropped(
    people: Any, key: Key, backdoor: Any, monkeypatch: Any
) -> None:
    from keys.jobs import reconcile

    backdoor(key.keystore).disable_key(KeyId=key.kms_key_id)
    observe = reconcile.observe

    def observe_then_deactivate(*args: Any) -> Any:
        seen = observe(*args)  # "disabled in AWS" ...
        services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)  # ... which is now the plan
        return seen

    monkeypatch.setattr(reconcile, "observe", observe_then_deactivate)

    result, key = reconciled(key)

    assert (result, key.state, key.drift) == (KeyResult.SKIPPED, KeyState.INACTIVE, [])
    assert reconcile_events(key) == []


def test_deleted_keys_are_not_reconciled(key: Key) -> None:
    Key.objects.filter(pk=key.pk).update(state=KeyState.DELETED)

    assert reconcile_key(key.pk, actor=SYSTEM) == KeyResult.SKIPPED


def test_a_keystore_is_worked_through_in_chunks(people: Any, keystore: Any) -> None:
    bob = people.actor(people.bob)
    keys = sorted(
        (services.key_create(actor=bob, keystore_id=keystore.pk, name=f"k{i}").key for i in range(3)),
        key=lambda k: k.pk,
    )

    first, after = reconcile_keystore(keystore.pk, actor=SYSTEM, limit=2)
    second, done = reconcile_keystore(keystore.pk, actor=SYSTEM, after=after, limit=2)

    assert (first.in_step, after, second.in_step, done) == (2, keys[1].pk, 1, None)


def test_the_management_command_reconciles_everything_and_resolves_interrupted_creations(
    people: Any, key: Key, backdoor: Any
) -> None:
    kms = backdoor(key.keystore)
    kms.disable_key(KeyId=key.kms_key_id)
    orphan = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    journal = PendingCreation.objects.create(key_id=uuid.uuid4(), keystore=key.keystore, operation="create")
    PendingCreation.objects.filter(pk=journal.pk).update(
        kms_key_arn=orphan["Arn"], started_at=timezone.now() - dt.timedelta(hours=1)
    )
    out = StringIO()

    call_command("byok_reconcile", stdout=out)

    assert out.getvalue().strip() == (
        "Reconciled 1 key(s) in 1 keystore(s): 0 in step, 1 with drift, 0 repaired, 0 not checked (AWS error), "
        "0 skipped; 1 interrupted creation(s) resolved."
    )
    assert kms.describe_key(KeyId=orphan["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert not PendingCreation.objects.exists()


def test_a_keystore_kms_cannot_be_reached_for_is_reported(key: Key, monkeypatch: Any) -> None:
    from byok_portal import aws
    from byok_portal.aws import AwsError

    def refuse(keystore: Any, **session: Any) -> Any:
        raise AwsError(kind="aws_connection_error", operation="AssumeRole", code="AccessDenied", message="no")

    monkeypatch.setattr(aws, "kms_for", refuse)

    summary = reconcile_everything(actor=SYSTEM)

    assert summary.failed_keystores == [str(key.keystore_id)]
    assert Key.objects.get(pk=key.pk).kms_checked_at == key.kms_checked_at


def test_the_rate_limiter_spaces_kms_calls_per_keystore() -> None:
    limiter = RateLimiter(20)
    started = time.monotonic()

    for _ in range(5):
        limiter.call(lambda: None)

    assert time.monotonic() - started >= 4 / 20 * 0.95
    assert RateLimiter(0).interval == 0
