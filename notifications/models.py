"""Notification channels of a keystore: webhooks with their delivery log, and people's email preferences."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from keystores.models import Keystore


class Webhook(models.Model):
    """An HTTPS endpoint that receives a keystore's notification events as signed JSON (SPEC §15).

    ``events`` lists the event types it wants (empty: every type). The signing secret is
    shown once, at creation; it is kept only sealed under the KEK (``keys.custody``, bound
    to this webhook's id), because every delivery needs it to sign.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    keystore = models.ForeignKey(Keystore, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField("URL", max_length=2048)
    events = models.JSONField(default=list, blank=True)
    secret_sealed = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class DeliveryState(models.TextChoices):
    PENDING = "PENDING", "Pending"
    DELIVERED = "DELIVERED", "Delivered"
    FAILED = "FAILED", "Gave up"


class Delivery(models.Model):
    """One event for one webhook: delivered at most once after a success, retried with backoff until then.

    ``(webhook, event_id)`` is unique, so an event fanned out twice (a redelivered task)
    makes one delivery. ``payload`` is the exact JSON body sent on every attempt.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=40)
    payload = models.JSONField()
    state = models.CharField(max_length=12, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["webhook", "event_id"], name="notifications_one_delivery")]
        indexes = [models.Index(fields=["webhook", "-created_at"], name="deliveries_by_webhook")]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.webhook}"


class DeliveryAttempt(models.Model):
    """One POST of a delivery: when, the HTTP status (none if the request failed), and why it failed."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="notifications_attempt_number")]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"


class EmailPreference(models.Model):
    """Which event types a person does *not* want by email from one keystore (default: every type)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    keystore = models.ForeignKey(Keystore, on_delete=models.CASCADE, related_name="+")
    muted = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "keystore"], name="notifications_one_preference")]

    def __str__(self) -> str:
        return f"{self.user} in {self.keystore}: muted {self.muted}"


class EmailSent(models.Model):
    """One event emailed to one person: claimed before sending, so a redelivered task emails nobody twice."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event_id = models.UUIDField()
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "event_id"], name="notifications_one_email")]

    def __str__(self) -> str:
        return f"{self.event_id} to {self.user}"
