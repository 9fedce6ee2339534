"""Notifications: webhooks (create, delete, test, deliver) and email, fed by the audit trail after commit.

:func:`on_audit_events` is the audit trail's after-commit hook (installed by
``NotificationsConfig.ready``): it only decides, without a query, whether an event is a
notification and queues :func:`fan_out` for it. Everything else runs in Celery tasks
(:mod:`notifications.tasks`), which take ids only.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.identity import Actor
from accounts.models import User
from audit.models import AuditEvent
from audit.services import record
from byok_portal.errors import NotFound
from byok_portal.vocabulary import Operation, Outcome
from keys import custody
from keystores.models import Keystore, Membership, Role
from keystores.selectors import require_role
from keystores.services import keystore_by_id, require_role_audited
from notifications import egress, signing
from notifications.events import (
    LABELS,
    SUBSCRIBABLE,
    EventType,
    event_type_of,
    payload_of,
    webhook_test_payload,
)
from notifications.models import Delivery, DeliveryAttempt, DeliveryState, EmailPreference, EmailSent, Webhook

logger = logging.getLogger("byok.notifications")

# Handed in by NotificationsConfig.ready (the task module imports this one).
_queue_fan_out: Callable[[int], object] | None = None
_queue_delivery: Callable[[uuid.UUID], object] | None = None


def queue_with(*, fan_out: Callable[[int], object], delivery: Callable[[uuid.UUID], object]) -> None:
    global _queue_fan_out, _queue_delivery  # set once, at start-up
    _queue_fan_out, _queue_delivery = fan_out, delivery


# --- from the audit trail -------------------------------------------------------------------


def on_audit_events(events: Sequence[AuditEvent]) -> None:
    """The audit trail's after-commit hook: queue a fan-out for each event that is a notification."""
    for event in events:
        if event.keystore_id is None or event_type_of(event) is None or _queue_fan_out is None:
            continue
        try:
            _queue_fan_out(event.seq)
        except Exception:  # the broker is away: the event stays in the trail, the notification is lost
            logger.warning("could not queue a notification", extra={"seq": event.seq}, exc_info=True)


def fan_out(seq: int) -> int:
    """Turn audit event ``seq`` into deliveries for the keystore's webhooks and emails for its members.

    Idempotent (a redelivered task creates no second delivery and sends no second
    email); returns how many deliveries it created.
    """
    event = AuditEvent.objects.filter(seq=seq).first()
    kind = event_type_of(event) if event is not None else None
    if event is None or kind is None or event.keystore_id is None:
        return 0
    payload = payload_of(kind, event)
    created = _deliveries_for(event.keystore_id, kind, payload)
    email_event(event, kind, payload)
    return created


def _deliveries_for(keystore_id: uuid.UUID, kind: EventType, payload: dict[str, Any]) -> int:
    created = 0
    for webhook in Webhook.objects.filter(keystore_id=keystore_id).order_by("id"):
        if not webhook.wants(kind):
            continue
        with transaction.atomic():
            delivery, new = Delivery.objects.get_or_create(
                webhook=webhook,
                event_id=uuid.UUID(payload["id"]),
                defaults={"event_type": str(kind), "payload": payload},
            )
            if new:
                created += 1
                transaction.on_commit(partial(_queue, delivery.pk))
    return created


def _queue(delivery_id: uuid.UUID) -> None:
    if _queue_delivery is not None:
        _queue_delivery(delivery_id)


# --- email ----------------------------------------------------------------------------------


def recipients(keystore_id: uuid.UUID, kind: EventType) -> list[User]:
    """Members of the keystore with an email address who have not muted ``kind`` there."""
    muted = EmailPreference.objects.filter(keystore_id=keystore_id, muted__contains=[str(kind)]).values("user_id")
    members = Membership.objects.filter(keystore_id=keystore_id).values("user_id")
    return list(
        User.objects.filter(pk__in=members, is_active=True).exclude(email="").exclude(pk__in=muted).order_by("pk")
    )


def email_event(event: AuditEvent, kind: EventType, payload: dict[str, Any]) -> int:
    """Email the event to its recipients, each at most once; returns how many were sent."""
    subject = f"[BYOK] {payload['summary']}"[:200]
    body = render_to_string("notifications/email.txt", {"event": payload, "label": LABELS[kind]})
    sent = 0
    for user in recipients(event.keystore_id, kind) if event.keystore_id else []:
        try:
            with transaction.atomic():
                EmailSent.objects.create(user=user, event_id=uuid.UUID(payload["id"]))
                # Inside the claim's transaction: a failed send releases the claim, and the task retries.
                send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email])
        except IntegrityError:
            continue  # already emailed (a redelivered task)
        sent += 1
    return sent


def email_preferences(user: User, keystores: Sequence[Keystore]) -> dict[uuid.UUID, list[str]]:
    """The muted event types of ``user`` per keystore (keystores without a row mute nothing)."""
    rows = EmailPreference.objects.filter(user=user, keystore__in=keystores).values_list("keystore_id", "muted")
    return {keystore_id: list(muted) for keystore_id, muted in rows}


def set_email_preference(*, user: User, keystore: Keystore, wanted: Sequence[str]) -> None:
    """Email ``user`` only the event types in ``wanted`` from ``keystore`` (a member's own choice)."""
    require_role(user, keystore, Role.AUDITOR)
    muted = [str(kind) for kind in SUBSCRIBABLE if str(kind) not in wanted]
    EmailPreference.objects.update_or_create(user=user, keystore=keystore, defaults={"muted": muted})


# --- webhooks -------------------------------------------------------------------------------


def _validate(url: str, events: Sequence[str]) -> None:
    schemes = ["https", "http"] if settings.BYOK_WEBHOOK_ALLOW_HTTP else ["https"]
    errors: dict[str, list[str]] = {}
    try:
        URLValidator(schemes=schemes)(url)
    except ValidationError:
        errors["url"] = [
            "Enter an https:// URL." if not settings.BYOK_WEBHOOK_ALLOW_HTTP else "Enter an http(s):// URL."
        ]
    else:
        refused = egress.check_for_saving(url)
        if refused is not None:
            errors["url"] = [refused]
    unknown = sorted(set(events) - {str(kind) for kind in SUBSCRIBABLE})
    if unknown:
        errors["events"] = [f"Unknown event type(s): {', '.join(unknown)}."]
    if errors:
        raise ValidationError(errors)


def _webhook(keystore: Keystore, webhook_id: Any) -> Webhook:
    try:
        webhook = Webhook.objects.filter(pk=webhook_id, keystore=keystore).first()
    except ValidationError:
        webhook = None
    if webhook is None:
        raise NotFound("Webhook not found.")
    return webhook


@dataclass(frozen=True)
class NewWebhook:
    webhook: Webhook
    secret: str  # shown once, never stored in the clear


def webhook_create(*, actor: Actor, keystore_id: Any, url: str, events: Sequence[str]) -> NewWebhook:
    """Add a webhook to a keystore (keystore admins); the signing secret is returned this once."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.CREATE_WEBHOOK, {"url": url})
    url, wanted = (url or "").strip(), sorted(set(events))
    _validate(url, wanted)
    secret = signing.new_secret()
    webhook_id = uuid.uuid4()
    with transaction.atomic():
        webhook = Webhook.objects.create(
            id=webhook_id,
            keystore=keystore,
            url=url,
            events=wanted,
            secret_sealed=custody.seal_software(webhook_id, secret.encode()),
            created_by=actor.user,
        )
        record(
            actor=actor,
            operation=Operation.CREATE_WEBHOOK,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"webhook": str(webhook.pk), "url": url, "events": wanted},
        )
    return NewWebhook(webhook, secret)


def webhook_delete(*, actor: Actor, keystore_id: Any, webhook_id: Any) -> None:
    """Remove a webhook and its delivery log (keystore admins)."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.DELETE_WEBHOOK, {"webhook": str(webhook_id)})
    webhook = _webhook(keystore, webhook_id)
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.DELETE_WEBHOOK,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"webhook": str(webhook.pk), "url": webhook.url},
        )
        webhook.delete()


def webhook_send_test(*, actor: Actor, keystore_id: Any, webhook_id: Any) -> Delivery:
    """Queue a ``webhook.test`` event to one webhook (keystore admins); the delivery log shows how it went."""
    keystore = keystore_by_id(keystore_id)
    require_role_audited(actor, keystore, Role.ADMIN, Operation.TEST_WEBHOOK, {"webhook": str(webhook_id)})
    webhook = _webhook(keystore, webhook_id)
    payload = webhook_test_payload(
        keystore_id=keystore.pk, keystore_name=keystore.name, actor_name=actor.display_name, at=timezone.now()
    )
    with transaction.atomic():
        delivery = Delivery.objects.create(
            webhook=webhook, event_id=uuid.UUID(payload["id"]), event_type=str(EventType.TEST), payload=payload
        )
        transaction.on_commit(lambda: _queue(delivery.pk))
    return delivery


def _secret(webhook: Webhook) -> str:
    sealed = bytes(webhook.secret_sealed)
    # Webhook secrets are not key material: the software KEK seals them whatever BYOK_CUSTODY says.
    secret = custody.unseal_software(webhook.pk, sealed)
    try:
        if not custody.software_sealed_with_current_kek(sealed):
            # Sealed under the previous KEK (a KEK rotation re-wraps key material, not these): re-seal now.
            Webhook.objects.filter(pk=webhook.pk).update(secret_sealed=custody.seal_software(webhook.pk, secret))
        return secret.decode()
    finally:
        custody.wipe(secret)


def reseal_secrets() -> int:
    """Re-seal every webhook secret not under the current software KEK; how many (run by the KEK rotation)."""
    rewrapped = 0
    for webhook_id in Webhook.objects.values_list("pk", flat=True).iterator():
        with transaction.atomic():
            webhook = Webhook.objects.select_for_update().filter(pk=webhook_id).first()
            if webhook is None or custody.software_sealed_with_current_kek(bytes(webhook.secret_sealed)):
                continue
            secret = custody.unseal_software(webhook.pk, bytes(webhook.secret_sealed))
            try:
                webhook.secret_sealed = custody.seal_software(webhook.pk, secret)
            finally:
                custody.wipe(secret)
            webhook.save(update_fields=["secret_sealed"])
            rewrapped += 1
    return rewrapped


def body_of(delivery: Delivery) -> bytes:
    """The exact bytes sent for a delivery: compact JSON, keys sorted, the same on every attempt."""
    return json.dumps(delivery.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def retry_delay(attempts: int) -> float:
    """Exponential backoff after ``attempts`` failed attempts, capped."""
    base, cap = settings.BYOK_WEBHOOK_BACKOFF_SECONDS, settings.BYOK_WEBHOOK_BACKOFF_CAP_SECONDS
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def attempt_delivery(delivery_id: uuid.UUID) -> float | None:
    """POST a pending delivery once; returns the delay before the next attempt, or None when done.

    The delivery row stays locked while its POST runs (bounded by the webhook timeout):
    a second task for the same delivery (a redelivered message) skips it instead of
    posting again, and once an attempt got a 2xx the delivery is DELIVERED and never
    sent again. A worker killed mid-POST rolls back and the next attempt repeats the
    request; receivers deduplicate by ``X-BYOK-Delivery`` (docs/notifications.md).
    A destination the SSRF guard refuses (:mod:`notifications.egress`) ends the delivery
    at once: asking DNS again later is no reason to try a refused network again.
    """
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id, state=DeliveryState.PENDING)
            .first()
        )
        if delivery is None:
            return None  # delivered, given up, deleted, or another worker has it now
        number = delivery.attempts + 1
        status, error, took, refused = _post(delivery)
        delivery.attempts = number
        delivery.last_status_code = status
        DeliveryAttempt.objects.create(
            delivery=delivery, number=number, status_code=status, error=error[:300], duration_ms=took
        )
        if status is not None and 200 <= status < 300:
            delivery.state, delivery.delivered_at = DeliveryState.DELIVERED, timezone.now()
        elif refused or number >= settings.BYOK_WEBHOOK_MAX_ATTEMPTS:
            delivery.state = DeliveryState.FAILED
        delivery.save(update_fields=["attempts", "last_status_code", "state", "delivered_at"])
    if delivery.state != DeliveryState.PENDING:
        log = logger.info if delivery.state == DeliveryState.DELIVERED else logger.warning
        log(
            "webhook delivery %s",
            delivery.state.lower(),
            extra={"delivery": str(delivery.pk), "attempts": number, "error": error[:300]},
        )
        return None
    return retry_delay(number)


def _post(delivery: Delivery) -> tuple[int | None, str, int, bool]:
    """One POST: (HTTP status or None, error text, milliseconds, refused by the SSRF guard)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        # Resolved and checked now, for this attempt: what the name pointed to at saving proves nothing.
        target = egress.destination(delivery.webhook.url)
    except egress.DestinationRefused as exc:
        return None, f"Refused: {exc.reason}", took(), True
    except egress.DestinationUnresolved as exc:
        return None, f"DNS: {exc}", took(), False
    body = body_of(delivery)
    timestamp = int(time.time())
    try:
        secret = _secret(delivery.webhook)
    except custody.CustodyError:
        # Sealed under a KEK the portal no longer has: no later attempt can sign either, so the
        # delivery ends now, with a reason an admin can act on (rotate the webhook's secret).
        return (
            None,
            "Secret unreadable: sealed under a KEK the portal does not have; "
            "delete the webhook and add it again for a new secret",
            took(),
            True,
        )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "BYOK-Portal-Webhook/1",
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.sign(secret, timestamp, body),
        signing.EVENT_HEADER: delivery.event_type,
        signing.DELIVERY_HEADER: str(delivery.pk),
    }
    try:
        # No redirects: the URL an admin entered (at the address just checked) is the only place the event goes.
        response = egress.post(target, body, headers, timeout=settings.BYOK_WEBHOOK_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: request failed", took(), False
    status = response.status_code
    error = "" if 200 <= status < 300 else f"HTTP {status} {response.reason_phrase or ''}".strip()
    return status, error, took(), False


def webhook_of(keystore: Keystore, webhook_id: Any) -> Webhook:
    return _webhook(keystore, webhook_id)


def webhooks_of(keystore: Keystore) -> list[Webhook]:
    return list(Webhook.objects.filter(keystore=keystore).order_by("created_at", "id"))


def recent_deliveries(keystore: Keystore, limit: int = 50) -> list[Delivery]:
    """The keystore's newest deliveries with their attempts (two queries)."""
    return list(
        Delivery.objects.filter(webhook__keystore=keystore)
        .select_related("webhook")
        .prefetch_related("attempt_log")
        .order_by("-created_at", "id")[:limit]
    )
