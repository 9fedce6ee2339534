"""No notification carries key material, a token or a webhook secret (SPEC §4, §15).

A key's material is replaced by a recognisable canary, then the key goes through the
operations that notify (expiry warning, drift, a failure, deletion scheduled, deleted), with
a bearer-looking token in a failing call's error; every email and every webhook body is searched
for the canary in every encoding, for the token and for the webhook's signing secret.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from accounts.identity import Actor
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys import custody
from keys import services as key_services
from keys.jobs.cleanup import cleanup_due_keys
from keys.jobs.expiry import warn_expiring_keys
from keys.jobs.reconcile import reconcile_key
from keys.models import Key, KeyMaterial
from notifications import services
from notifications.models import Delivery
from tests.test_canary import CANARY, forms_of

pytestmark = pytest.mark.django_db

TOKEN = "byok_" + "T0kenCanary" * 4
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYW5hcnkiLCJpc3MiOiJ0ZXN0In0.c2lnbmF0dXJlLWNhbmFyeS1zaWduYXR1cmU"


def test_no_notification_carries_material_tokens_or_the_webhook_secret(
    addressed: Any,
    keystore: Any,
    backdoor: Any,
    monkeypatch: pytest.MonkeyPatch,
    in_process: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    monkeypatch.setattr(custody, "generate_material", lambda *spec: bytearray(CANARY))
    bob = addressed.actor(addressed.bob)
    created = services.webhook_create(
        actor=addressed.actor(addressed.alice), keystore_id=keystore.pk, url="https://hooks.example.com/b", events=[]
    )
    with django_capture_on_commit_callbacks(execute=True):
        key = key_services.key_create(
            actor=bob, keystore_id=keystore.pk, name="Canary", alias="alias/canary", expires=timezone.localdate()
        ).key
        sealed = KeyMaterial.objects.get(key=key, version=1).material_sealed
        assert sealed is not None
        assert custody.unseal(key.pk, sealed, version=1) == CANARY
        warn_expiring_keys(actor=Actor.system("expiry"))
        backdoor(keystore).disable_key(KeyId=key.kms_key_arn)
        reconcile_key(key.pk, actor=Actor.system("reconcile"))
        # A failure whose text carries a token and a JWT: the trail redacts them before anyone is told.
        record(
            actor=bob,
            operation=Operation.ACTIVATE,
            outcome=Outcome.FAILED,
            key=key,
            error=f"upstream said Authorization: Bearer {JWT} and {TOKEN} material={CANARY.hex()}",
            details={"aws_code": "KMSInternalException", "token": TOKEN},
        )
        key_services.key_deactivate(actor=bob, key_id=key.pk)
        key_services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)
        Key.objects.filter(pk=key.pk).update(deletion_date=timezone.now() - dt.timedelta(days=1))
        cleanup_due_keys(actor=Actor.system("cleanup"))

    kinds = sorted(set(Delivery.objects.values_list("event_type", flat=True)))
    assert kinds == [
        "key.deleted",
        "key.deletion_scheduled",
        "key.drift_found",
        "key.expiry_warning",
        "operation.failed",
    ]
    told = [m.subject.encode() + m.body.encode() for m in mail.outbox]
    told += [services.body_of(delivery) for delivery in Delivery.objects.all()]
    assert len(told) == 5 * 4 + 5
    forbidden = [*forms_of(CANARY), TOKEN.encode(), JWT.encode(), created.secret.encode()]
    for text in told:
        for secret in forbidden:
            assert secret not in text, f"{secret[:12]!r}… leaked into a notification"
