"""The audit trail: one hash-chained event per action (SPEC §4)."""

from __future__ import annotations

from django.db import models

from byok_portal.vocabulary import Outcome


class AuditEvent(models.Model):
    """One audited action, immutable once written.

    Keystore and key are plain ids with their names, alias and ARN copied in (no
    foreign keys, so nothing cascades and events stay meaningful after deletion).
    ``time`` never decreases along ``seq`` (appends take the later of the clock and the
    previous event's time), so a time range is also a ``seq`` range.
    ``hash`` is HMAC-SHA-256 under ``BYOK_AUDIT_KEY`` over the previous event's hash
    and this event's canonical content (:mod:`audit.chain`); on PostgreSQL a
    trigger rejects UPDATE, DELETE and TRUNCATE. Never holds key material or tokens.
    """

    seq = models.BigIntegerField(unique=True)
    time = models.DateTimeField()
    actor_iss = models.CharField(max_length=255)
    actor_sub = models.CharField(max_length=255)
    actor_name = models.CharField(max_length=255, blank=True, default="")
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    operation = models.CharField(max_length=32)
    keystore_id = models.UUIDField(null=True, blank=True)
    keystore_name = models.CharField(max_length=200, blank=True, default="")
    key_id = models.UUIDField(null=True, blank=True)
    key_alias = models.CharField(max_length=256, blank=True, default="")
    key_arn = models.CharField(max_length=2048, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=128, blank=True, default="")
    state_before = models.CharField(max_length=20, blank=True, default="")
    state_after = models.CharField(max_length=20, blank=True, default="")
    kms_request_ids = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        # The admin and the read paths never change events; the add/change/delete
        # permissions Django creates by default are withheld from everyone in the admin.
        default_permissions = ("view",)
        indexes = [
            models.Index(fields=["keystore_id", "-seq"], name="audit_by_keystore"),
            models.Index(fields=["key_id", "-seq"], name="audit_by_key"),
            models.Index(fields=["actor_sub", "-seq"], name="audit_by_actor"),
            models.Index(fields=["actor_name", "-seq"], name="audit_by_actor_name"),
            models.Index(fields=["operation", "-seq"], name="audit_by_operation"),
            models.Index(fields=["outcome", "-seq"], name="audit_by_outcome"),
            models.Index(fields=["time", "seq"], name="audit_by_time_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.operation} {self.outcome} by {self.actor_name or self.actor_sub}"


class AuditHead(models.Model):
    """The newest ``(seq, hash)`` of the chain, one row.

    Appends lock this row, which serialises writers so the chain never forks; it is
    also what operators publish externally to detect a truncated tail.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="")
    # The newest event's time: the next event's is never earlier (see audit.services.record).
    time = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"audit head #{self.seq}"
