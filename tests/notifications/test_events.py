"""Audit events become notifications: which ones, the email each person gets, and the webhook payloads."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, Outcome
from keys import services as key_services
from keys.jobs.cleanup import cleanup_due_keys
from keys.jobs.expiry import warn_expiring_keys
from keys.jobs.reconcile import reconcile_key
from keys.jobs.rotation import rotate_due_keys
from keystores.services import keystore_create, keystore_test_connection
from notifications import services
from notifications.events import EventType, event_type_of
from notifications.models import Delivery, EmailSent
from tests.conftest import REGION, new_account_id

pytestmark = pytest.mark.django_db

EXPIRY = Actor.system("expiry")
PAYLOAD_FIELDS = {
    "id",
    "type",
    "schema_version",
    "occurred_at",
    "summary",
    "keystore",
    "key",
    "operation",
    "outcome",
    "reason",
    "state_before",
    "state_after",
    "actor",
    "error",
    "data",
    "audit",
}


def recipients_of(message: Any) -> list[str]:
    return sorted(message.to)


def test_an_expiry_warning_is_emailed_to_every_member_with_an_address(
    addressed: Any, make_key: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    key = make_key(alias="alias/payments-2026", expires=timezone.localdate() + dt.timedelta(days=5))

    with django_capture_on_commit_callbacks(execute=True):
        warn_expiring_keys(actor=EXPIRY)

    event = AuditEvent.objects.get(operation="expiry_warning")
    # Eve holds no role in the keystore: she has an address but is told nothing.
    assert sorted(to for m in mail.outbox for to in m.to) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dan@example.com",
    ]
    message = mail.outbox[0]
    assert message.subject == "[BYOK] alias/payments-2026 in Payments expires in 5 day(s)"
    body = message.body
    assert "Key expires soon: alias/payments-2026 in Payments expires in 5 day(s)" in body
    assert f"alias/payments-2026 ({key.pk})" in body
    assert f"Payments ({key.keystore_id})" in body
    assert f"expires: {key.expires.isoformat()}" in body
    assert "days_left: 5" in body
    assert f"Audit event #{event.seq} (hash {event.hash})" in body


def test_a_scheduled_deletion_is_emailed_with_its_date_and_the_person_who_did_it(
    addressed: Any, keystore: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = addressed.actor(addressed.bob)
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Ledger", alias="alias/ledger").key
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        key_services.key_deactivate(actor=bob, key_id=key.pk)
        key_services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)

    # Deactivating is no notification; scheduling the deletion is, for each of the four members.
    assert len(mail.outbox) == 4
    message = mail.outbox[0]
    assert message.subject == "[BYOK] Deletion scheduled: alias/ledger in Payments"
    key.refresh_from_db()
    assert "Operation: schedule_deletion (success)" in message.body
    assert "State:     INACTIVE -> PENDING_DELETION" in message.body
    assert "By:        bob" in message.body
    assert key.deletion_date is not None
    assert f"deletion_date: {key.deletion_date:%Y-%m-%d}" in str(message.body)


def test_a_deleted_key_is_emailed(
    addressed: Any, make_due_key: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    key = make_due_key(alias="alias/old")

    with django_capture_on_commit_callbacks(execute=True):
        cleanup_due_keys(actor=Actor.system("cleanup"))

    assert len(mail.outbox) == 4
    assert mail.outbox[0].subject == "[BYOK] Key deleted: alias/old in Payments"
    assert "State:     PENDING_DELETION -> DELETED" in mail.outbox[0].body
    assert str(key.pk) in mail.outbox[0].body


def test_drift_found_by_reconciliation_is_emailed_with_what_differs(
    addressed: Any, keystore: Any, backdoor: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = addressed.actor(addressed.bob)
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Cards", alias="alias/cards").key
    backdoor(keystore).disable_key(KeyId=key.kms_key_arn)  # someone disables it in the AWS console
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        reconcile_key(key.pk, actor=Actor.system("reconcile"))

    assert len(mail.outbox) == 4
    message = mail.outbox[0]
    assert message.subject == "[BYOK] KMS drift found: alias/cards in Payments"
    assert "Operation: reconcile (success, drift_found)" in message.body
    assert "kms_state: DISABLED" in message.body
    assert "drift: [" in message.body


def test_a_failed_operation_is_emailed_with_aws_s_error(
    addressed: Any, aws_sandbox: str, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    account = new_account_id()
    alice = addressed.actor(addressed.alice)
    # Its role was never created in the sandbox: AssumeRole fails, as AWS answers for a missing role.
    store = keystore_create(
        actor=alice, name="Unready", aws_account_id=account, region=REGION, role_arn=f"arn:aws:iam::{account}:role/x"
    )

    with django_capture_on_commit_callbacks(execute=True):
        keystore_test_connection(actor=alice, keystore_id=store.pk)

    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    message = mail.outbox[0]
    assert message.subject == "[BYOK] test_connection failed on keystore Unready in Unready"
    assert "Error:     " in message.body
    assert "AccessDenied" in message.body


def test_a_person_who_muted_an_event_type_is_not_emailed_it(
    addressed: Any, make_key: Any, keystore: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    services.set_email_preference(
        user=addressed.bob, keystore=keystore, wanted=[str(EventType.KEY_DELETED), str(EventType.DRIFT_FOUND)]
    )
    make_key(expires=timezone.localdate())

    with django_capture_on_commit_callbacks(execute=True):
        warn_expiring_keys(actor=EXPIRY)

    assert "bob@example.com" not in [to for m in mail.outbox for to in m.to]
    assert len(mail.outbox) == 3


def test_a_second_fan_out_of_the_same_event_sends_and_delivers_nothing_more(
    addressed: Any, make_key: Any, keystore: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    created = services.webhook_create(
        actor=addressed.actor(addressed.alice), keystore_id=keystore.pk, url="https://hooks.example.com/byok", events=[]
    )
    make_key(expires=timezone.localdate())
    with django_capture_on_commit_callbacks(execute=True):
        warn_expiring_keys(actor=EXPIRY)
    seq = AuditEvent.objects.get(operation="expiry_warning").seq
    assert (len(mail.outbox), Delivery.objects.count(), len(in_process)) == (4, 1, 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.fan_out(seq) == 0

    assert (len(mail.outbox), Delivery.objects.count(), EmailSent.objects.count(), len(in_process)) == (4, 1, 4, 1)
    delivery = Delivery.objects.get()
    assert delivery.webhook == created.webhook
    assert set(delivery.payload) == PAYLOAD_FIELDS
    assert delivery.payload["type"] == "key.expiry_warning"
    assert delivery.payload["audit"] == {"seq": seq, "hash": AuditEvent.objects.get(seq=seq).hash}


def test_a_webhook_gets_only_the_event_types_it_asked_for(
    addressed: Any,
    make_key: Any,
    make_due_key: Any,
    keystore: Any,
    in_process: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    services.webhook_create(
        actor=addressed.actor(addressed.alice),
        keystore_id=keystore.pk,
        url="https://hooks.example.com/deleted-only",
        events=[str(EventType.KEY_DELETED)],
    )
    make_key(expires=timezone.localdate())
    make_due_key()
    with django_capture_on_commit_callbacks(execute=True):
        warn_expiring_keys(actor=EXPIRY)
        cleanup_due_keys(actor=Actor.system("cleanup"))

    assert list(Delivery.objects.values_list("event_type", flat=True)) == ["key.deleted"]


@pytest.mark.parametrize(
    ("operation", "outcome", "reason", "details", "expected"),
    [
        ("expiry_warning", Outcome.SUCCESS, "expires_soon", None, EventType.EXPIRY_WARNING),
        ("schedule_deletion", Outcome.SUCCESS, "", None, EventType.DELETION_SCHEDULED),
        ("schedule_deletion", Outcome.NOOP, "", None, None),
        ("schedule_deletion", Outcome.REFUSED, "invalid_state", None, None),
        ("cleanup", Outcome.SUCCESS, "", None, EventType.KEY_DELETED),
        ("reconcile", Outcome.SUCCESS, "drift_found", None, EventType.DRIFT_FOUND),
        ("reconcile", Outcome.SUCCESS, "drift_changed", None, EventType.DRIFT_FOUND),
        ("reconcile", Outcome.SUCCESS, "drift_resolved", None, None),
        ("reconcile", Outcome.FAILED, "connection_failed", None, EventType.OPERATION_FAILED),
        ("activate", Outcome.FAILED, "", None, EventType.OPERATION_FAILED),
        ("activate", Outcome.SUCCESS, "", None, None),
        ("update", Outcome.SUCCESS, "", None, None),
        # Native rotation (issue 15): a rotation, and a due key the scheduled rotation may not rotate (flagged).
        ("rotate", Outcome.SUCCESS, "", None, EventType.ROTATION_DONE),
        ("rotate", Outcome.REFUSED, "rotation_due_cannot_rotate", None, EventType.ROTATION_DUE),
        ("rotate", Outcome.REFUSED, "rotation_limit", None, None),
        # Quorum approvals (issue 17): asked, and decided (the approval reaching quorum, a rejection, an expiry).
        ("request_approval", Outcome.SUCCESS, "", None, EventType.APPROVAL_REQUESTED),
        ("approve", Outcome.SUCCESS, "", {"approvals": 1, "quorum": False}, None),
        ("approve", Outcome.SUCCESS, "", {"approvals": 2, "quorum": True}, EventType.APPROVAL_DECIDED),
        ("approve", Outcome.NOOP, "", {"approvals": 2}, None),
        ("reject", Outcome.SUCCESS, "", None, EventType.APPROVAL_DECIDED),
        ("expire_approval", Outcome.SUCCESS, "", None, EventType.APPROVAL_DECIDED),
        ("cancel_approval", Outcome.SUCCESS, "", None, None),
        ("execute_approval", Outcome.SUCCESS, "", None, None),
        ("execute_approval", Outcome.FAILED, "invalid_state", None, EventType.OPERATION_FAILED),
        # Names guessed before those existed are not audit operations.
        ("rotation_due", Outcome.SUCCESS, "", None, None),
        ("approval_request", Outcome.SUCCESS, "", None, None),
        ("approval_decided", Outcome.SUCCESS, "", None, None),
    ],
)
def test_which_audit_events_are_notifications(
    operation: str, outcome: str, reason: str, details: dict[str, Any] | None, expected: EventType | None
) -> None:
    event = AuditEvent(operation=operation, outcome=outcome, reason=reason, details=details or {})
    assert event_type_of(event) == expected


def test_the_documented_schema_lists_every_event_type_and_field() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    for kind in EventType:
        assert f"`{kind}`" in doc
    for field in PAYLOAD_FIELDS:
        assert f"`{field}`" in doc
    assert KeyState.PENDING_DELETION in doc
    assert json.loads(doc.split("```json", 1)[1].split("```", 1)[0])["schema_version"] == 1


def test_a_webhook_secret_sealed_under_the_previous_kek_is_resealed_when_used(
    people: Any, keystore: Any, settings: Any
) -> None:
    import base64

    from keys import custody
    from notifications.models import Webhook

    created = services.webhook_create(
        actor=people.actor(people.alice), keystore_id=keystore.pk, url="https://hooks.example.com/k", events=[]
    )
    settings.BYOK_KEK_PREVIOUS, settings.BYOK_KEK = settings.BYOK_KEK, base64.b64encode(b"n" * 32).decode()
    custody.current_kek.cache_clear()
    custody.previous_keks.cache_clear()
    try:
        assert services._secret(Webhook.objects.get()) == created.secret
        resealed = bytes(Webhook.objects.get().secret_sealed)
        assert custody.sealed_with_current_kek(resealed)
        settings.BYOK_KEK_PREVIOUS = ""
        custody.previous_keks.cache_clear()
        assert services._secret(Webhook.objects.get()) == created.secret
    finally:
        custody.current_kek.cache_clear()
        custody.previous_keks.cache_clear()


def test_a_rotation_and_a_flagged_due_key_are_emailed_with_the_real_material_facts(
    addressed: Any, keystore: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = addressed.actor(addressed.bob)
    rotated = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Orders", alias="alias/orders").key
    flagged = key_services.key_create(
        actor=bob, keystore_id=keystore.pk, name="Mac", alias="alias/mac", key_spec="HMAC_256", rotation_period_days=90
    ).key
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        key_services.key_rotate(actor=bob, key_id=rotated.pk)
    with django_capture_on_commit_callbacks(execute=True):
        rotate_due_keys(
            actor=Actor.system("rotation"), today=timezone.localdate() + dt.timedelta(days=91), pace_seconds=0
        )

    done = AuditEvent.objects.get(key_id=rotated.pk, operation="rotate", outcome=Outcome.SUCCESS)
    due = AuditEvent.objects.get(key_id=flagged.pk, operation="rotate", outcome=Outcome.REFUSED)
    assert (event_type_of(done), event_type_of(due)) == (EventType.ROTATION_DONE, EventType.ROTATION_DUE)
    subjects = sorted({m.subject for m in mail.outbox})
    assert subjects == ["[BYOK] Key rotated: alias/orders in Payments", "[BYOK] Rotation due: alias/mac in Payments"]
    assert len(mail.outbox) == 8  # each of the four members, twice
    current = rotated.materials.get(state="CURRENT")
    body = next(m.body for m in mail.outbox if "alias/orders" in m.subject)
    assert (current.version, done.details["version"], done.details["previous_version"]) == (2, 2, 1)
    assert "version: 2" in body
    assert "previous_version: 1" in body
    assert f"kcv: {current.kcv}" in body
    assert "rotations: 1" in body
    flagged_body = next(m.body for m in mail.outbox if "alias/mac" in m.subject)
    assert "why: not symmetric" in flagged_body
    assert "Operation: rotate (refused, rotation_due_cannot_rotate)" in flagged_body


def test_an_approval_request_and_its_quorum_are_emailed(
    addressed: Any, keystore: Any, in_process: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from approvals import services as approvals
    from approvals.models import ApprovalPolicy, ApprovalRequest
    from byok_portal.dual_control import ApprovalPending
    from byok_portal.vocabulary import Operation
    from keys.operations import REGISTRY

    bob = addressed.actor(addressed.bob)
    key = key_services.key_create(actor=bob, keystore_id=keystore.pk, name="Ledger", alias="alias/ledger").key
    ApprovalPolicy.objects.update_or_create(keystore=keystore, defaults={"disable": 2})
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ApprovalPending):
        REGISTRY[Operation.DEACTIVATE].run(bob, key.pk)  # the operations' one door, where the gate is
    request = ApprovalRequest.objects.get()
    assert sorted({m.subject for m in mail.outbox}) == [
        "[BYOK] Approval requested: deactivate of alias/ledger in Payments"
    ]
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.approve(actor=addressed.actor(addressed.carol), request_id=request.pk)
    assert mail.outbox == []  # one approval of two is no decision
    with django_capture_on_commit_callbacks(execute=True):
        approvals.approve(actor=addressed.actor(addressed.alice), request_id=request.pk)

    decided = AuditEvent.objects.get(operation="approve", details__quorum=True)
    assert event_type_of(decided) is EventType.APPROVAL_DECIDED
    assert sorted({m.subject for m in mail.outbox}) == [
        "[BYOK] Approval approved: deactivate of alias/ledger in Payments"
    ]
    body = mail.outbox[0].body
    assert "decision: approved" in body
    assert f"request: {request.pk}" in body
    assert "approvals: 2" in body
