"""Key representations and inputs for the REST API (SPEC §6).

Serializers check shapes only; the AWS alias and tag rules and every lifecycle rule
are the services' (``keys.validation``, ``keys.lifecycle``), so pages and API agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from byok_portal.api import StrictSerializer
from byok_portal.vocabulary import KmsState, Operation
from byok_portal.wrapping import WRAPPING_ALGORITHMS
from keys.lifecycle import LIFECYCLE, allowed_operations
from keys.models import Key, KeyMaterial, KeyReplica, MaterialState
from keys.services import MAX_WINDOW, MIN_WINDOW, pending_download
from keys.specs import DEFAULT_SPEC, NOT_IMPORTABLE, KeySpec, KeyUsage
from keys.validation import MAX_TAGS
from keystores.models import (
    MAX_MATERIAL_VALID_DAYS,
    MAX_ROTATION_PERIOD_DAYS,
    MIN_MATERIAL_VALID_DAYS,
    MIN_ROTATION_PERIOD_DAYS,
    RotationOnLimit,
)
from keystores.serializers import material_valid_days_field

ALIAS_PATTERN = r"^alias/[A-Za-z0-9/_-]{1,250}$"
TAG_VALUE_PATTERN = r"^[\w\s.:/=+\-@]*$"

# Operations a client can see in ``allowed_operations``: the offered rows of the lifecycle table.
OFFERED_OPERATIONS = [op.value for op, row in LIFECYCLE.items() if row.offered]


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": 256},
        "maxProperties": MAX_TAGS - 1,
        "description": "AWS tags (string map): keys 1-128, values up to 256 of letters, digits, spaces and "
        "`_ . : / = + - @`; the `aws:` prefix and the portal's own tag key are reserved.",
    }
)
class TagsField(serializers.DictField):
    """A string→string map; AWS's own rules are checked by the service."""

    child = serializers.CharField(allow_blank=True, max_length=256)


class KeySpecField(serializers.ChoiceField):
    """AWS's key spec names; a spec AWS has but the portal cannot import is refused saying why."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data in NOT_IMPORTABLE:
            raise serializers.ValidationError(NOT_IMPORTABLE[data], code="not_importable")
        return super().to_internal_value(data)


class BlankAsNullField(serializers.CharField):
    """A column that is empty when it does not apply (a KCV of an RSA key), shown as null."""

    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]  # null is the point
        return str(value) if value else None


class ReplicaSerializer(serializers.Serializer[Any]):
    """One replica of a multi-Region key (SPEC §11): its region, ARN and last observed KMS state."""

    region = serializers.CharField(read_only=True)
    kms_key_arn = serializers.CharField(read_only=True)
    kms_state = serializers.ChoiceField(choices=KmsState.choices, read_only=True)


class KeySerializer(serializers.ModelSerializer[Key]):
    """A key as the API shows it. Never material, never the prepared public key."""

    keystore = serializers.UUIDField(source="keystore_id", read_only=True)
    tags = serializers.DictField(child=serializers.CharField(), read_only=True)
    replaces = serializers.UUIDField(source="replaces_id", read_only=True, allow_null=True)
    replaced_by = serializers.SerializerMethodField()
    download_prepared = serializers.BooleanField(read_only=True)
    multi_region = serializers.BooleanField(
        read_only=True, help_text="A multi-Region KMS key (mrk-…): the same material in every region of `replicas`."
    )
    replicas = ReplicaSerializer(
        many=True,
        read_only=True,
        help_text="The replicas of a multi-Region key (the primary is `kms_key_arn`, in the keystore's region).",
    )
    pending_approval = serializers.UUIDField(
        read_only=True, allow_null=True, help_text="The approval request waiting to act on this key (SPEC §12), if any."
    )
    kcv = BlankAsNullField(
        read_only=True,
        allow_null=True,
        help_text="Key check value (symmetric: AES-CMAC, HMAC: HMAC with the key's hash, of 16 zero bytes; "
        "first 3 bytes, hex). Null for RSA and EC keys: see public_key_sha256.",
    )
    public_key = BlankAsNullField(
        read_only=True, allow_null=True, help_text="RSA and EC keys: the public key, PEM SubjectPublicKeyInfo."
    )
    public_key_sha256 = BlankAsNullField(
        read_only=True,
        allow_null=True,
        help_text="RSA and EC keys: hex SHA-256 of the DER public key, as KMS GetPublicKey returns it.",
    )
    allowed_operations = serializers.ListField(
        child=serializers.ChoiceField(choices=OFFERED_OPERATIONS),
        read_only=True,
        help_text="Operations that take effect on the key in its current state (and that its spec can do), "
        "from the lifecycle table (`download` only while a download is prepared).",
    )

    class Meta:
        model = Key
        fields = [
            "id",
            "keystore",
            "name",
            "alias",
            "tags",
            "expires",
            "state",
            "kms_key_arn",
            "kms_state",
            "kms_checked_at",
            "key_spec",
            "key_usage",
            "multi_region",
            "replicas",
            "kcv",
            "public_key",
            "public_key_sha256",
            "material_version",
            "rotations",
            "rotated_at",
            "rotation_period_days",
            "rotation_on_limit",
            "next_rotation_date",
            "material_valid_days",
            "deletion_date",
            "replaces",
            "replaced_by",
            "download_prepared",
            "pending_approval",
            "allowed_operations",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, key: Key) -> dict[str, Any]:
        """The declared fields, written by ``represent_rows`` from the key's columns.

        Output is identical to the declared fields' (``test_representation_matches_drfs``).
        """
        row = {column: getattr(key, column) for column in ROW_COLUMNS}
        row["replaced_by"] = Key.objects.filter(replaces_id=key.pk).values_list("pk", flat=True).first()
        row["download_prepared"] = key.download_prepared
        if key.multi_region:
            row["replicas"] = replica_rows([key.pk]).get(key.pk, [])
        return represent_rows([row])[0]

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_replaced_by(self, key: Key) -> str | None:
        """For the schema and DRF's generic representation; ``to_representation`` looks it up itself."""
        value = Key.objects.filter(replaces_id=key.pk).values_list("pk", flat=True).first()
        return str(value) if value else None


# The columns a key's representation reads, by attribute name (``keys.selectors.key_rows`` selects
# them, plus ``replaced_by`` and ``download_prepared``). Never the sealed material, the
# prepared public key or the reconciliation notes.
ROW_COLUMNS = (
    "id",
    "keystore_id",
    "name",
    "alias",
    "tags",
    "expires",
    "state",
    "kms_key_arn",
    "kms_state",
    "kms_checked_at",
    "key_spec",
    "key_usage",
    "multi_region",
    "kcv",
    "public_key",
    "public_key_sha256",
    "material_version",
    "rotations",
    "rotated_at",
    "rotation_period_days",
    "rotation_on_limit",
    "next_rotation_date",
    "material_valid_days",
    "deletion_date",
    "replaces_id",
    "pending_approval",
    "created_at",
    "updated_at",
)


def replica_rows(key_ids: Iterable[Any]) -> dict[Any, list[dict[str, str]]]:
    """The replicas of these keys as the API shows them, by key id (one query)."""
    found: dict[Any, list[dict[str, str]]] = {}
    rows = KeyReplica.objects.filter(key_id__in=list(key_ids)).order_by("key_id", "region")
    for key_id, region, arn, state in rows.values_list("key_id", "region", "kms_key_arn", "kms_state"):
        found.setdefault(key_id, []).append({"region": region, "kms_key_arn": arn, "kms_state": state})
    return found


_DATETIME = serializers.DateTimeField()
_UTC_NAMES = {"UTC", "Etc/UTC"}


def represent_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keys as ``KeySerializer`` declares them, from rows of ``ROW_COLUMNS``, ``replaced_by`` and ``download_prepared``.

    A list page's hot path: no model instances and no field objects per value.
    Timestamps are what DRF's ``DateTimeField`` writes (ISO 8601 in the current time
    zone, ``Z`` for UTC; anything unusual is handed to that field), and
    ``allowed_operations`` is computed once per (state, download prepared) from the lifecycle table.
    """
    zone = timezone.get_current_timezone() if settings.USE_TZ else None
    # The database's values are in UTC: in a UTC zone they need no conversion.
    utc_zone = zone is not None and str(zone) in _UTC_NAMES
    utc = UTC
    operations: dict[tuple[str, str, bool, bool], list[str]] = {}

    def stamp(value: datetime | None) -> str | None:
        if value is None:
            return None
        if utc_zone and value.tzinfo is utc:
            text = value.isoformat()
        elif zone is not None and value.tzinfo is not None:
            text = value.astimezone(zone).isoformat()
        else:
            return str(_DATETIME.to_representation(value))
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    def allowed(state: str, key_spec: str, prepared: bool, multi_region: bool) -> list[str]:
        found = operations.get((state, key_spec, prepared, multi_region))
        if found is None:
            found = operations[state, key_spec, prepared, multi_region] = [
                op.value
                for op in allowed_operations(state, key_spec, download_prepared=prepared, multi_region=multi_region)
            ]
        return list(found)

    return [
        {
            "id": str(row["id"]),
            "keystore": str(row["keystore_id"]),
            "name": row["name"],
            "alias": row["alias"],
            "tags": {str(k): str(v) for k, v in (row["tags"] or {}).items()},
            "expires": row["expires"].isoformat() if row["expires"] else None,
            "state": row["state"],
            "kms_key_arn": row["kms_key_arn"],
            "kms_state": row["kms_state"],
            "kms_checked_at": stamp(row["kms_checked_at"]),
            "key_spec": row["key_spec"],
            "key_usage": row["key_usage"],
            "multi_region": bool(row["multi_region"]),
            "replicas": list(row.get("replicas") or []),
            # Empty in the row means "none" (RSA and EC keys have no KCV; others no public key).
            "kcv": row["kcv"] or None,
            "public_key": row["public_key"] or None,
            "public_key_sha256": row["public_key_sha256"] or None,
            "material_version": row["material_version"],
            "rotations": row["rotations"],
            "rotated_at": stamp(row["rotated_at"]),
            "rotation_period_days": row["rotation_period_days"],
            "rotation_on_limit": row["rotation_on_limit"],
            "next_rotation_date": row["next_rotation_date"].isoformat() if row["next_rotation_date"] else None,
            "material_valid_days": row["material_valid_days"],
            "deletion_date": stamp(row["deletion_date"]),
            "replaces": str(row["replaces_id"]) if row["replaces_id"] else None,
            "replaced_by": str(row["replaced_by"]) if row["replaced_by"] else None,
            "download_prepared": bool(row["download_prepared"]),
            "pending_approval": str(row["pending_approval"]) if row["pending_approval"] else None,
            "allowed_operations": allowed(
                row["state"], row["key_spec"], bool(row["download_prepared"]), bool(row["multi_region"])
            ),
            "created_at": stamp(row["created_at"]),
            "updated_at": stamp(row["updated_at"]),
        }
        for row in rows
    ]


ROTATION_PERIOD_HELP = (
    f"Rotate the key's material every this many days ({MIN_ROTATION_PERIOD_DAYS}-{MAX_ROTATION_PERIOD_DAYS}, "
    "AWS's range); `null`: no rotation policy."
)


MATERIAL_VALID_DAYS_HELP = (
    f"The material expires in KMS this many days after each import ({MIN_MATERIAL_VALID_DAYS}-"
    f"{MAX_MATERIAL_VALID_DAYS}; AWS's ValidTo is at most 365 days ahead) and the portal imports it again "
    "before then; `null`: it does not expire."
)


class KeyCreateSerializer(StrictSerializer):
    """``POST /keys/``."""

    keystore = serializers.UUIDField()
    name = serializers.CharField(max_length=200)
    alias = serializers.RegexField(ALIAS_PATTERN, max_length=256, required=False, allow_blank=True, default="")
    tags = TagsField(required=False, default=dict)
    expires = serializers.DateField(required=False, allow_null=True, default=None)
    key_spec = KeySpecField(
        choices=KeySpec.choices,
        required=False,
        default=DEFAULT_SPEC,
        help_text="AWS key spec, fixed at creation (SPEC §9). Default SYMMETRIC_DEFAULT.",
    )
    key_usage = serializers.ChoiceField(
        choices=KeyUsage.values,
        required=False,
        help_text="AWS key usage, fixed at creation; must be one AWS allows for key_spec. Default: the spec's "
        "(ENCRYPT_DECRYPT for symmetric and RSA, GENERATE_VERIFY_MAC for HMAC, SIGN_VERIFY for EC).",
    )
    multi_region = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A multi-Region KMS key (SPEC §11): its primary in the keystore's region, replicas in "
        "`replica_regions`, the same material in each. Fixed at creation.",
    )
    replica_regions = serializers.ListField(
        child=serializers.CharField(max_length=32),
        required=False,
        default=list,
        max_length=20,
        help_text="Regions of the keystore's partition, other than its own, each once; needs `multi_region`.",
    )
    rotation_period_days = serializers.IntegerField(
        min_value=MIN_ROTATION_PERIOD_DAYS,
        max_value=MAX_ROTATION_PERIOD_DAYS,
        required=False,
        allow_null=True,
        help_text=ROTATION_PERIOD_HELP + " Default: the keystore's.",
    )
    material_valid_days = material_valid_days_field(MATERIAL_VALID_DAYS_HELP + " Default: the keystore's.")


class AddReplicaSerializer(StrictSerializer):
    """``POST /keys/{id}/add-replica/``: the region of the new replica."""

    region = serializers.CharField(
        max_length=32, help_text="A region of the keystore's partition where the key has no replica yet."
    )


class KeyUpdateSerializer(StrictSerializer):
    """``PATCH /keys/{id}/``: only the fields given change; ``alias: ""`` removes the alias."""

    name = serializers.CharField(max_length=200, required=False)
    alias = serializers.RegexField(ALIAS_PATTERN, max_length=256, required=False, allow_blank=True)
    tags = TagsField(required=False)
    expires = serializers.DateField(required=False, allow_null=True)
    rotation_period_days = serializers.IntegerField(
        min_value=MIN_ROTATION_PERIOD_DAYS,
        max_value=MAX_ROTATION_PERIOD_DAYS,
        required=False,
        allow_null=True,
        help_text=ROTATION_PERIOD_HELP,
    )
    rotation_on_limit = serializers.ChoiceField(
        choices=RotationOnLimit.choices,
        required=False,
        help_text="A due key that cannot rotate (not symmetric, or rotated 25 times): `renew` it or `flag` it.",
    )
    material_valid_days = material_valid_days_field(MATERIAL_VALID_DAYS_HELP)


class RenewSerializer(StrictSerializer):
    """``POST /keys/{id}/renew/``: the new key's name and expiry; each defaults as the page's form does."""

    name = serializers.CharField(
        max_length=200,
        required=False,
        help_text='The new key\'s name; default: the old name with a version suffix ("orders" -> "orders v2").',
    )
    expires = serializers.DateField(
        required=False,
        allow_null=True,
        help_text="The new key's expiry (`null`: none); default: the old key's cryptoperiod from today, "
        "or none if the old key had no expiry.",
    )


class ScheduleDeletionSerializer(StrictSerializer):
    pending_window_days = serializers.IntegerField(
        min_value=MIN_WINDOW,
        max_value=MAX_WINDOW,
        required=False,
        help_text=f"Days KMS waits before deleting the key ({MIN_WINDOW}-{MAX_WINDOW}); default configured, 30.",
    )


class PrepareDownloadSerializer(StrictSerializer):
    public_key = serializers.CharField(
        max_length=20_000,
        help_text="PEM RSA public key (SubjectPublicKeyInfo), 2048, 3072 or 4096 bits.",
    )


FINGERPRINT_HELP = "`SHA256:` and the hex SHA-256 of the public key's DER SubjectPublicKeyInfo."


class KeyMaterialSerializer(serializers.ModelSerializer[KeyMaterial]):
    """A material version as the API shows it: never the material, sealed or not."""

    kcv = BlankAsNullField(read_only=True, allow_null=True)
    kms_key_material_id = BlankAsNullField(
        read_only=True, allow_null=True, help_text="AWS's KeyMaterialId (symmetric keys; null until learned)."
    )

    class Meta:
        model = KeyMaterial
        fields = ["version", "kms_key_material_id", "kcv", "state", "imported_at", "rotated_at", "valid_to"]
        read_only_fields = fields


class MaterialListSerializer(serializers.Serializer[Any]):
    """``GET /keys/{id}/materials/``."""

    results = KeyMaterialSerializer(many=True)


class WrappedVersionSerializer(serializers.Serializer[Any]):
    """One material version in a download, wrapped for the same public key as the current one."""

    version = serializers.IntegerField(min_value=1)
    state = serializers.ChoiceField(choices=MaterialState.choices)
    kcv = serializers.CharField(allow_null=True)
    wrapped_key_material = serializers.CharField(help_text="Base64.")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {
            "version": instance.version,
            "state": instance.state,
            "kcv": instance.kcv or None,
            "wrapped_key_material": instance.wrapped_b64,
        }


class DownloadSerializer(serializers.Serializer[Any]):
    """The material wrapped for the prepared public key, and how (SPEC §2, §9).

    Symmetric and HMAC material: RSAES-OAEP (SHA-256, MGF1-SHA-256). RSA and EC keys: the
    PKCS#8 DER private key, RSA_AES_KEY_WRAP_SHA_256 (RSA-OAEP-SHA-256 of an AES-256 key,
    then AES key wrap with padding, RFC 5649).
    """

    key_id = serializers.UUIDField()
    key_spec = serializers.ChoiceField(choices=KeySpec.choices)
    wrapping_algorithm = serializers.ChoiceField(choices=list(WRAPPING_ALGORITHMS))
    wrapped_key_material = serializers.CharField(help_text="Base64.")
    kcv = serializers.CharField(allow_null=True, help_text="Symmetric and HMAC keys: the key check value.")
    public_key_sha256 = serializers.CharField(
        allow_null=True, help_text="RSA and EC keys: hex SHA-256 of the DER public key of the material."
    )
    public_key_fingerprint = serializers.CharField(
        help_text="The public key the material is wrapped for: " + FINGERPRINT_HELP + " Check it is yours."
    )
    material_version = serializers.IntegerField(help_text="The version of `wrapped_key_material` (the current one).")
    materials = WrappedVersionSerializer(
        many=True, help_text="Every material version the key holds, oldest first (old ciphertexts need theirs)."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {
            "key_id": str(instance.key_id),
            "key_spec": instance.key_spec,
            "wrapping_algorithm": instance.wrapping_algorithm,
            "wrapped_key_material": instance.wrapped_b64,
            "kcv": instance.kcv or None,
            "public_key_sha256": instance.public_key_sha256 or None,
            "public_key_fingerprint": instance.public_key_fingerprint,
            "material_version": instance.version,
            "materials": [WrappedVersionSerializer(version).data for version in instance.materials],
        }


class PendingDownloadSerializer(serializers.Serializer[Any]):
    """A prepared download not yet used: who prepared it, until when, for which public key."""

    prepared_by = serializers.CharField(help_text="`issuer|subject` of the person who prepared it.")
    prepared_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    public_key_fingerprint = serializers.CharField(help_text=FINGERPRINT_HELP)


class PreparedKeySerializer(KeySerializer):
    """The key, with the download just prepared for it (``download``)."""

    download = PendingDownloadSerializer()

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "download"]
        read_only_fields = fields

    def to_representation(self, key: Key) -> dict[str, Any]:
        pending = pending_download(key, include_expired=True)
        assert pending is not None, "only ever given a key whose download was just prepared"
        return {**super().to_representation(key), "download": pending.as_dict()}


def operation_description(operation: Operation) -> str:
    """The OpenAPI description of a key action, written from its lifecycle row."""
    row = LIFECYCLE[operation]
    allowed = ", ".join(sorted(row.allowed)) or "no state"
    lines = [row.consequence, "", f"**Allowed in:** {allowed}."]
    if row.noop:
        lines.append(f"**No-op in:** {', '.join(sorted(row.noop))} (succeeds, changes nothing).")
    lines.append(f"**Resulting state:** {row.target or 'unchanged'}.")
    lines.append("Any other state: `409 invalid_state` listing `allowed_states`; nothing changes.")
    return "\n".join(lines)
