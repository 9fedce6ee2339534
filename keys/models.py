"""Portal keys: the system of record for key material imported into AWS KMS."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from byok_portal.vocabulary import KeyState, KmsState
from keys.lifecycle import allowed_operations
from keys.specs import DEFAULT_SPEC, DEFAULT_USAGE, SPECS, KeySpec, KeyUsage
from keystores.models import (
    MATERIAL_VALID_DAYS_VALIDATORS,
    ROTATION_PERIOD_VALIDATORS,
    Keystore,
    RotationOnLimit,
)


def _allowed_pairs() -> Q:
    pairs = Q()
    for spec in SPECS.values():
        pairs |= Q(key_spec=spec.key_spec, key_usage__in=spec.usages)
    return pairs


class Key(models.Model):
    """A portal key and its one KMS key (``Origin=EXTERNAL``).

    The material itself lives in its versions (:class:`KeyMaterial`, ``materials``),
    each only ever stored sealed; a symmetric key gains a version with every rotation
    (SPEC §10). ``kcv`` is the current version's, and safe to show.

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
    # A multi-Region KMS key (SPEC §11): the primary is this row's KMS key, in the keystore's region;
    # its replicas are ``replicas`` (KeyReplica), each holding the same material.
    multi_region = models.BooleanField(default=False, editable=False)
    # The current material version and how often the key was rotated (SPEC §10), kept with the row so lists
    # and the rotation policy read them without joining the versions; KeyMaterial is the record.
    material_version = models.PositiveIntegerField(default=1, editable=False)
    rotations = models.PositiveIntegerField(default=0, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Rotation policy: every ``rotation_period_days`` (null: none); ``next_rotation_date`` follows from it.
    rotation_period_days = models.PositiveIntegerField(null=True, blank=True, validators=ROTATION_PERIOD_VALIDATORS)
    rotation_on_limit = models.CharField(max_length=8, choices=RotationOnLimit.choices, default=RotationOnLimit.FLAG)
    next_rotation_date = models.DateField(null=True, blank=True, editable=False)
    # Material imported into KMS expires this many days after each import (``ValidTo``), and the
    # re-import task (keys.jobs.reimport) imports it again before then; null: it never expires.
    material_valid_days = models.PositiveIntegerField(null=True, blank=True, validators=MATERIAL_VALID_DAYS_VALIDATORS)
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
            models.Index(
                fields=["next_rotation_date"],
                name="keys_due_for_rotation",
                condition=Q(next_rotation_date__isnull=False),
            ),
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
            op.value
            for op in allowed_operations(
                self.state, self.key_spec, download_prepared=self.download_prepared, multi_region=self.multi_region
            )
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


class KeyReplica(models.Model):
    """One replica of a multi-Region key (SPEC §11): the same key id and material in another region.

    The primary stays on :class:`Key` (``kms_key_arn``, ``kms_state``, ``drift``); each replica
    has its own ARN, last observed KMS state and drift, because AWS keeps state, tags and
    aliases per region. ``kms_key_arn`` is empty until ``ReplicateKey`` has answered.
    """

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="replicas")
    region = models.CharField(max_length=32)
    kms_key_arn = models.CharField("KMS key ARN", max_length=2048, blank=True, default="")
    kms_state = models.CharField(max_length=20, choices=KmsState.choices, default=KmsState.UNKNOWN)
    kms_checked_at = models.DateTimeField(null=True, blank=True)
    # Reconciliation's findings for this region; empty when in step.
    drift = models.JSONField(default=list, blank=True)
    deletion_date = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key", "region"]
        constraints = [models.UniqueConstraint(fields=["key", "region"], name="keys_one_replica_per_region")]

    def __str__(self) -> str:
        return f"{self.key_id} in {self.region}"

    @property
    def kms_key_id(self) -> str:
        return self.kms_key_arn.rsplit("/", 1)[-1] if self.kms_key_arn else ""


class MaterialState(models.TextChoices):
    """Where a key material version stands in KMS (AWS's ``KeyMaterialState`` names)."""

    CURRENT = "CURRENT", "Current"
    NON_CURRENT = "NON_CURRENT", "Non-current (decrypt only)"
    PENDING_ROTATION = "PENDING_ROTATION", "Pending rotation"


class KeyMaterial(models.Model):
    """One version of a key's material: every material a key ever had is kept (SPEC §10).

    Version 1 is the material the key was created with; each rotation adds the next.
    AWS needs *every* permanently associated material (``CURRENT`` and ``NON_CURRENT``)
    present for the key to work, so the portal keeps each one sealed to re-import it.
    ``material_sealed`` is sealed by :func:`keys.custody.seal` with associated data that
    binds it to the key's id *and* this version, and is emptied by cleanup.
    ``valid_to`` is when AWS will delete it (a key with ``material_valid_days``).
    ``kms_key_material_id`` is AWS's ``KeyMaterialId`` (blank for HMAC and asymmetric
    keys, and until reconciliation learns it for a key migrated from before versions).
    A ``PENDING_ROTATION`` version is a rotation in progress: it becomes ``CURRENT`` or is
    withdrawn (by the retried rotation or by reconciliation), never left behind.
    """

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="materials")
    version = models.PositiveIntegerField()
    kms_key_material_id = models.CharField("KMS key material id", max_length=64, blank=True, default="")
    material_sealed = models.BinaryField(null=True, blank=True, editable=False)
    kcv = models.CharField("KCV", max_length=6, blank=True, default="")
    state = models.CharField(max_length=20, choices=MaterialState.choices, default=MaterialState.CURRENT)
    imported_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    # When AWS deletes this material (its ``ValidTo``; the earliest of a multi-Region key's regions);
    # null: it does not expire, or KMS does not hold it (deactivated).
    valid_to = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["key", "version"]
        indexes = [
            models.Index(fields=["valid_to"], name="key_material_by_expiry", condition=Q(valid_to__isnull=False)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="key_material_unique_version"),
            models.UniqueConstraint(fields=["key"], condition=Q(state="CURRENT"), name="key_material_one_current"),
            models.UniqueConstraint(
                fields=["key"], condition=Q(state="PENDING_ROTATION"), name="key_material_one_pending"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="key_material_version_from_1"),
        ]

    def __str__(self) -> str:
        return f"version {self.version} of key {self.key_id} ({self.state})"
