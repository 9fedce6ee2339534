"""Keystore representations and inputs for the REST API (SPEC §6). Validation rules live in the model."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from byok_portal.api import StrictSerializer
from keystores.models import (
    MAX_MATERIAL_VALID_DAYS,
    MAX_ROTATION_PERIOD_DAYS,
    MIN_MATERIAL_VALID_DAYS,
    MIN_ROTATION_PERIOD_DAYS,
    ROLE_ARN_RE,
    Keystore,
    RotationOnLimit,
    kms_regions,
)

ROLE_ARN_PATTERN = ROLE_ARN_RE.pattern
ACCOUNT_ID_PATTERN = r"^\d{12}$"


def material_valid_days_field(help_text: str) -> serializers.IntegerField:
    """``material_valid_days`` in a body (a key's or a keystore's default): 400 naming the field and AWS's bounds."""
    reason = (
        f"Must be a whole number of days from {MIN_MATERIAL_VALID_DAYS} to {MAX_MATERIAL_VALID_DAYS} (AWS accepts "
        "a ValidTo at most 365 days ahead), or null for material that does not expire."
    )
    return serializers.IntegerField(
        min_value=MIN_MATERIAL_VALID_DAYS,
        max_value=MAX_MATERIAL_VALID_DAYS,
        required=False,
        allow_null=True,
        help_text=help_text,
        error_messages={"min_value": reason, "max_value": reason, "invalid": reason},
    )


class ConnectionCheckSerializer(serializers.Serializer[Any]):
    """The outcome of the last "test connection" (AWS's error verbatim); all null until the first one."""

    at = serializers.DateTimeField(allow_null=True)
    ok = serializers.BooleanField(allow_null=True)
    error = serializers.CharField(allow_null=True, help_text="AWS's error when `ok` is false, else null.")


class KeystoreSerializer(serializers.ModelSerializer[Keystore]):
    """A keystore as the API shows it."""

    last_connection_check = serializers.SerializerMethodField()

    class Meta:
        model = Keystore
        fields = [
            "id",
            "name",
            "aws_account_id",
            "region",
            "role_arn",
            "external_id",
            "state",
            "auto_reupload",
            "rotation_period_days",
            "rotation_on_limit",
            "material_valid_days",
            "created_at",
            "updated_at",
            "last_connection_check",
        ]
        read_only_fields = fields

    @extend_schema_field(ConnectionCheckSerializer)
    def get_last_connection_check(self, keystore: Keystore) -> dict[str, Any]:
        at = keystore.last_check_at
        return {
            "at": serializers.DateTimeField().to_representation(at) if at is not None else None,
            "ok": bool(keystore.last_check_ok) if at is not None else None,
            "error": keystore.last_check_error or None,
        }


class KeystoreCreateSerializer(StrictSerializer):
    """``POST /keystores/``: the AWS account, region and role the portal will assume."""

    name = serializers.CharField(max_length=200)
    aws_account_id = serializers.RegexField(ACCOUNT_ID_PATTERN, help_text="12 digits.")
    region = serializers.ChoiceField(choices=kms_regions(), help_text="A region where AWS KMS is available.")
    role_arn = serializers.RegexField(
        ROLE_ARN_PATTERN, max_length=2048, help_text="arn:aws:iam::<the same account>:role/<path/name>"
    )


class KeystoreUpdateSerializer(StrictSerializer):
    """``PATCH /keystores/{id}/``: account, region and external id never change."""

    name = serializers.CharField(max_length=200, required=False)
    role_arn = serializers.RegexField(ROLE_ARN_PATTERN, max_length=2048, required=False)
    auto_reupload = serializers.BooleanField(required=False)
    # The rotation policy new keys of this keystore get (SPEC §10); each key keeps its own afterwards.
    rotation_period_days = serializers.IntegerField(
        min_value=MIN_ROTATION_PERIOD_DAYS,
        max_value=MAX_ROTATION_PERIOD_DAYS,
        required=False,
        allow_null=True,
        help_text=f"New keys rotate every this many days ({MIN_ROTATION_PERIOD_DAYS}-{MAX_ROTATION_PERIOD_DAYS}, "
        "AWS's range); `null`: new keys have no rotation policy.",
    )
    rotation_on_limit = serializers.ChoiceField(
        choices=RotationOnLimit.choices,
        required=False,
        help_text="New keys' choice for a due key that cannot rotate: `renew` it or `flag` it.",
    )
    material_valid_days = material_valid_days_field(
        "New keys' material expires in KMS this many days after each import and is imported again before then "
        f"({MIN_MATERIAL_VALID_DAYS}-{MAX_MATERIAL_VALID_DAYS}); `null`: it does not expire."
    )


class ConnectionTestSerializer(serializers.Serializer[Any]):
    """``POST /keystores/{id}/test-connection/``."""

    ok = serializers.BooleanField()
    error = serializers.CharField(allow_null=True, help_text="AWS's error, verbatim, when `ok` is false.")
    at = serializers.DateTimeField()


class IamPolicySerializer(serializers.Serializer[Any]):
    """Copy-ready IAM policy documents for the keystore's role."""

    trust_policy = serializers.DictField(help_text="Trust policy: the portal's principal, with the external id.")
    permissions_policy = serializers.DictField(help_text="Least-privilege KMS permissions policy.")
