"""A KEK rotation re-seals webhook signing secrets with the key material, so dropping the old KEK loses nothing;
a secret that can no longer be opened ends its delivery with a reason instead of an endless retry."""

from __future__ import annotations

import base64
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from keys import custody
from notifications import services, signing
from notifications.models import DeliveryAttempt, DeliveryState, Webhook
from tests.tasks.test_webhooks import Receiver

pytestmark = pytest.mark.django_db

NEW_KEK = base64.b64encode(b"w" * 32).decode()
OTHER_KEK = base64.b64encode(b"x" * 32).decode()


def use_kek(settings: Any, kek: str, previous: str = "") -> None:
    settings.BYOK_KEK, settings.BYOK_KEK_PREVIOUS = kek, previous
    custody.current_kek.cache_clear()
    custody.previous_keks.cache_clear()


@pytest.fixture
def allowed_receiver(receiver: Receiver, settings: Any) -> Receiver:
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    return receiver


def test_after_a_kek_rotation_and_dropping_the_old_kek_webhooks_still_sign(
    people: Any, keystore: Any, allowed_receiver: Receiver, settings: Any
) -> None:
    alice = people.actor(people.alice)
    created = services.webhook_create(actor=alice, keystore_id=keystore.pk, url=allowed_receiver.url, events=[])
    sealed_before = bytes(created.webhook.secret_sealed)
    use_kek(settings, NEW_KEK, previous=settings.BYOK_KEK)

    call_command("byok_rotate_kek", stdout=(out := StringIO()))

    assert "re-sealed 1 webhook signing secret(s)" in out.getvalue()
    sealed_after = bytes(Webhook.objects.get(pk=created.webhook.pk).secret_sealed)
    assert sealed_after != sealed_before
    assert custody.software_sealed_with_current_kek(sealed_after)
    event = AuditEvent.objects.filter(operation="rotate_kek").latest("seq")
    assert event.details == {
        "resealed": 0,
        "already_current": 0,
        "moved_into_hsm": 0,
        "others_resealed": {"webhook signing": 1},
    }
    # The old KEK is gone: the webhook (never delivered to since the rotation) still signs with its secret.
    use_kek(settings, NEW_KEK)
    delivery = services.webhook_send_test(actor=alice, keystore_id=keystore.pk, webhook_id=created.webhook.pk)
    assert services.attempt_delivery(delivery.pk) is None
    (request,) = allowed_receiver.requests
    assert signing.verify(
        created.secret,
        timestamp=request.headers[signing.TIMESTAMP_HEADER],
        body=request.body,
        signature=request.headers[signing.SIGNATURE_HEADER],
    )
    # A second run finds nothing left to re-seal.
    call_command("byok_rotate_kek", stdout=(out := StringIO()))
    assert "re-sealed 0 webhook signing secret(s)" in out.getvalue()


def test_a_secret_under_a_lost_kek_ends_the_delivery_once_with_the_reason(
    people: Any, keystore: Any, allowed_receiver: Receiver, settings: Any
) -> None:
    alice = people.actor(people.alice)
    created = services.webhook_create(actor=alice, keystore_id=keystore.pk, url=allowed_receiver.url, events=[])
    use_kek(settings, OTHER_KEK)  # the KEK that sealed it is gone, and no rotation ran
    delivery = services.webhook_send_test(actor=alice, keystore_id=keystore.pk, webhook_id=created.webhook.pk)

    assert services.attempt_delivery(delivery.pk) is None

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (DeliveryState.FAILED, 1)
    (attempt,) = DeliveryAttempt.objects.filter(delivery=delivery)
    assert attempt.error.startswith("Secret unreadable: sealed under a KEK the portal does not have")
    assert allowed_receiver.requests == []
