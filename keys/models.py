"""Portal keys: the system of record for key material imported into AWS KMS."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from byok_portal.vocabulary import KeyState, KmsState
from keys.lifecycle import allowed_operations
from keys.specs import DEFAULT_SPEC, DEFAULT_USAGE, SPECS, KeySpec, KeyUsage
from keystores.models import Keystore


def _allowed_pairs() -> Q:
    pairs = Q()
    for spec in SPECS.values():
        pairs |= Q(key_spec=spec.key_spec, key_usage__in=spec.usages)
    return pairs


class Key(models.Model):
    """A portal key and its one KMS key (``Origin=EXTERNAL``).

    The material itself is only ever stored sealed (AES-256-GCM under the KEK, bound
    to this key's id, see :mod:`keys.custody`); ``material_sealed`` is emptied when
    the key reaches ``DELETED``. ``kcv`` is safe to show.

    ``key_spec`` and ``key_usage`` (AWS's names, SPEC §9) are fixed at creation. For
    RSA and EC keys ``kcv`` is empty and ``public_key`` / ``public_key_sha256`` are the
    check values instead: reconciliation compares them with KMS ``GetPublicKey``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    keystore = models.ForeignKey(Keystore, on_delete=models.PROTECT, related_name="keys")
    name = models.CharField(max_length=200)
    alias = models.CharField(max_length=256, blank=True, default="")
    tags = models.JSONField(default=dict, blank=True)
    expires = models.DateField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=KeyState.choices, default=KeyState.ACTIVE)
    kms_key_arn = models.CharField("KMS key ARN", max_length=2048, blank=True, default="")
    kms_state = models.CharField(max_length=20, choices=KmsState.choices, default=KmsState.UNKNOWN)
    kms_checked_at = models.DateTimeField(null=True, blank=True)
    # Human-readable disagreements between the portal and KMS found by reconciliation; empty when in step.
    drift = models.JSONField(default=list, blank=True)
    key_spec = models.CharField(max_length=20, choices=KeySpec.choices, default=DEFAULT_SPEC, editable=False)
    key_usage = models.CharField(max_length=20, choices=KeyUsage.choices, default=DEFAULT_USAGE, editable=False)
    kcv = models.CharField("KCV", max_length=6, blank=True, default="")
    public_key = models.TextField(blank=True, default="", editable=False)
    public_key_sha256 = models.CharField("public key SHA-256", max_length=64, blank=True, default="", editable=False)
    material_sealed = models.BinaryField(null=True, blank=True, editable=False)
    deletion_date = models.DateTimeField(null=True, blank=True)
    replaces = models.OneToOneField("self", on_delete=models.PROTECT, null=True, blank=True, related_name="replaced_by")
    # The two-person rule's mark: who prepared a download, for which public key, until when.
    download_public_key = models.TextField(blank=True, default="", editable=False)
    download_prepared_by_iss = models.CharField(max_length=255, blank=True, default="")
    download_prepared_by_sub = models.CharField(max_length=255, blank=True, default="")
    download_prepared_at = models.DateTimeField(null=True, blank=True)
    expiry_warned_on = models.DateField(null=True, blank=True)
    # The approval request waiting to act on this key (SPEC §12), kept by the approvals app: the key
    # resource names it, and a page shows it, without the keys app knowing approvals.
    pending_approval = models.UUIDField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["keystore", "state", "-created_at"], name="keys_by_keystore_state"),
            models.Index(fields=["state", "deletion_date"], name="keys_due_for_cleanup"),
            models.Index(fields=["expires"], name="keys_by_expiry", condition=Q(expires__isnull=False)),
        ]
        constraints = [
            # An alias names one live key per keystore; AWS enforces the same per account+region.
            models.UniqueConstraint(
                fields=["keystore", "alias"],
                condition=~Q(alias="") & ~Q(state=KeyState.DELETED),
                name="keys_unique_live_alias",
            ),
            # AWS's spec/usage pairs (SPEC §9), so no door and no admin edit can store another.
            models.CheckConstraint(condition=_allowed_pairs(), name="keys_allowed_spec_usage"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.alias or self.id})"

    @property
    def kms_key_id(self) -> str:
        return self.kms_key_arn.rsplit("/", 1)[-1] if self.kms_key_arn else ""

    @property
    def download_prepared(self) -> bool:
        return bool(self.download_public_key)

    @property
    def allowed_operations(self) -> list[str]:
        return [
            op.value for op in allowed_operations(self.state, self.key_spec, download_prepared=self.download_prepared)
        ]


class PendingCreation(models.Model):
    """Intent journal for a KMS key being created (create or renew).

    Written and committed *before* ``CreateKey``, so that a crash between AWS
    creating the key and the portal committing its ``Key`` row leaves a record from
    which the orphan is found (by its ARN, or by the portal's tag) and scheduled
    for deletion instead of being forgotten in the customer's account.

    The same journal holds, under an existing key's id, an operation whose KMS
    changes must not be lost with a failed commit (cancel deletion): reconciliation
    finishes it. A row is leased to the process working on it (see
    ``keys.services._creation_lease``) and resolved as soon as that process is gone.
    """

    key_id = models.UUIDField(primary_key=True)
    keystore = models.ForeignKey(Keystore, on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=20)
    kms_key_arn = models.CharField(max_length=2048, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.operation} of {self.key_id} started {self.started_at:%Y-%m-%d %H:%M}"
