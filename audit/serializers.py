"""Read-only representations of audit events for the API (and, field for field, the JSON Lines export)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audit.export import TIME_FORMAT
from audit.models import AuditEvent


class ActorSerializer(serializers.Serializer[Any]):
    """Who acted: the ``(iss, sub)`` of their ID token and their display name."""

    iss = serializers.CharField(source="actor_iss")
    sub = serializers.CharField(source="actor_sub")
    name = serializers.CharField(source="actor_name")


class KeystoreRefSerializer(serializers.Serializer[Any]):
    """The keystore as it was named when the event happened."""

    id = serializers.UUIDField(source="keystore_id")
    name = serializers.CharField(source="keystore_name")


class KeyRefSerializer(serializers.Serializer[Any]):
    """The key with its alias and KMS ARN copied in, so the event outlives the key."""

    id = serializers.UUIDField(source="key_id")
    alias = serializers.CharField(source="key_alias")
    arn = serializers.CharField(source="key_arn")


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    """One audit event; ``keystore`` and ``key`` are null for events that concern none."""

    time = serializers.DateTimeField(format=TIME_FORMAT, read_only=True)
    actor = ActorSerializer(source="*", read_only=True)
    keystore = KeystoreRefSerializer(source="*", read_only=True, allow_null=True)
    key = KeyRefSerializer(source="*", read_only=True, allow_null=True)
    kms_request_ids = serializers.ListField(child=serializers.CharField(), read_only=True)
    details = serializers.DictField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "time",
            "actor",
            "source_ip",
            "request_id",
            "operation",
            "keystore",
            "key",
            "outcome",
            "reason",
            "state_before",
            "state_after",
            "kms_request_ids",
            "error",
            "details",
            "hash",
        ]
        read_only_fields = fields

    def to_representation(self, instance: AuditEvent) -> dict[str, Any]:
        data = super().to_representation(instance)
        if instance.keystore_id is None:
            data["keystore"] = None
        if instance.key_id is None:
            data["key"] = None
        return data


class ChainHeadSerializer(serializers.Serializer[Any]):
    """The newest link of the chain, ``(seq, hash)``: publish it outside the portal to detect truncation."""

    seq = serializers.IntegerField()
    hash = serializers.CharField()


class VerificationSerializer(serializers.Serializer[Any]):
    """The result of walking the whole chain."""

    ok = serializers.BooleanField()
    events = serializers.IntegerField(help_text="Events verified before the first bad one (all of them when ok).")
    first_bad = serializers.IntegerField(allow_null=True, help_text="Sequence number of the first bad event.")
    problem = serializers.CharField(allow_blank=True)
    head = ChainHeadSerializer(help_text="The last good link.")
