"""Keystores (one AWS account + region) and who may do what in them."""

from __future__ import annotations

import re
import secrets
import uuid
from functools import cache

import botocore.session
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?P<name>[\w+=,.@/-]{1,512})$")


@cache
def kms_regions() -> tuple[str, ...]:
    """Every region where botocore knows KMS, across the standard, China and GovCloud partitions."""
    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("kms", partition_name=partition))
    return tuple(sorted(regions))


def validate_kms_region(value: str) -> None:
    if value not in kms_regions():
        raise ValidationError(f"{value!r} is not a region where AWS KMS is available.", code="invalid_region")


def new_external_id() -> str:
    # 32 url-safe characters: well inside STS's [\w+=,.@:/-]{2,1224}, and unguessable,
    # which is the point of the confused-deputy defence.
    return "byok-" + secrets.token_urlsafe(24)


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    CUSTODIAN = "custodian", "Custodian"
    AUDITOR = "auditor", "Auditor"


# What each role may do, strongest first. Read by the selectors, never re-stated.
ROLE_RANK = {Role.AUDITOR: 1, Role.CUSTODIAN: 2, Role.ADMIN: 3}


class KeystoreState(models.TextChoices):
    ACTIVE = "ACTIVE", "Active"
    DELETED = "DELETED", "Deleted"


# AWS's own range for a rotation period (EnableKeyRotation's RotationPeriodInDays), used for imported keys too.
MIN_ROTATION_PERIOD_DAYS, MAX_ROTATION_PERIOD_DAYS = 90, 2560
ROTATION_PERIOD_VALIDATORS = [MinValueValidator(MIN_ROTATION_PERIOD_DAYS), MaxValueValidator(MAX_ROTATION_PERIOD_DAYS)]


# How long imported material may stay in KMS before AWS deletes it (SPEC §10): AWS takes a ValidTo at most
# 365 days ahead (ImportKeyMaterial reference).
MIN_MATERIAL_VALID_DAYS, MAX_MATERIAL_VALID_DAYS = 1, 365
MATERIAL_VALID_DAYS_VALIDATORS = [
    MinValueValidator(MIN_MATERIAL_VALID_DAYS),
    MaxValueValidator(MAX_MATERIAL_VALID_DAYS),
]


class RotationOnLimit(models.TextChoices):
    """What the rotation policy does with a due key that cannot rotate (not symmetric, or 25 rotations done)."""

    RENEW = "renew", "Renew it (new key, alias moves)"
    FLAG = "flag", "Flag it for a person to decide"


class Keystore(models.Model):
    """A collection of keys bound to exactly one AWS account and region.

    The portal reaches the account by assuming ``role_arn`` with ``external_id``,
    which the portal generates, never the user, and which never changes: the
    customer's trust policy pins it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    aws_account_id = models.CharField(
        "AWS account ID",
        max_length=12,
        validators=[RegexValidator(r"^\d{12}$", "An AWS account ID is exactly 12 digits.", code="invalid_account")],
    )
    region = models.CharField(max_length=32, validators=[validate_kms_region])
    role_arn = models.CharField("role ARN", max_length=2048)
    external_id = models.CharField(max_length=64, unique=True, default=new_external_id, editable=False)
    state = models.CharField(max_length=16, choices=KeystoreState.choices, default=KeystoreState.ACTIVE)
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    last_check_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    auto_reupload = models.BooleanField(
        default=False,
        help_text="Re-import material automatically when reconciliation finds an active key EMPTY in KMS.",
    )
    # The rotation policy new keys get (SPEC §10); each key keeps its own afterwards.
    rotation_period_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=ROTATION_PERIOD_VALIDATORS,
        help_text="Rotate new keys' material every this many days (90–2560); empty: no rotation policy.",
    )
    rotation_on_limit = models.CharField(
        max_length=8,
        choices=RotationOnLimit.choices,
        default=RotationOnLimit.FLAG,
        help_text="What to do with a key due for rotation that cannot rotate (not symmetric, or at AWS's 25).",
    )
    material_valid_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=MATERIAL_VALID_DAYS_VALIDATORS,
        help_text="New keys' material expires in KMS this many days after each import (1–365) and is re-imported "
        "before then; empty: it does not expire.",
    )

    class Meta:
        ordering = ["name", "id"]
        permissions = []

    def __str__(self) -> str:
        return f"{self.name} ({self.aws_account_id}/{self.region})"

    def clean(self) -> None:
        match = ROLE_ARN_RE.match(self.role_arn or "")
        if not match:
            raise ValidationError(
                {"role_arn": "Expected arn:aws:iam::<account id>:role/<path/name>."}, code="invalid_role_arn"
            )
        if self.aws_account_id and match["account"] != self.aws_account_id:
            raise ValidationError(
                {"role_arn": f"The role must be in account {self.aws_account_id}, not {match['account']}."},
                code="role_in_other_account",
            )

    @property
    def is_deleted(self) -> bool:
        return self.state == KeystoreState.DELETED


class Membership(models.Model):
    """A user's role in one keystore."""

    keystore = models.ForeignKey(Keystore, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["keystore", "user"], name="keystores_one_role_per_user")]
        ordering = ["keystore", "user"]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.keystore}"
