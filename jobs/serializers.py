"""The job resource of ``/api/v1/jobs/`` (SPEC §16) and its request body."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from byok_portal.api import StrictSerializer
from jobs.models import Job, JobItem
from jobs.services import BULK_OPERATIONS, eta_seconds


class JobCreateSerializer(StrictSerializer):
    """``POST /jobs/``: an operation and key ids, a key filter, or (create) keystores and names (each name in each)."""

    operation = serializers.ChoiceField(choices=[op.value for op in BULK_OPERATIONS])
    keys = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=10_000)
    filter = serializers.DictField(required=False, help_text='The key list\'s filters, e.g. {"state": "ACTIVE"}.')
    keystores = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=100, help_text="create: keystores to create in."
    )
    names = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=10_000, help_text="create: key names."
    )
    parameters = serializers.DictField(
        required=False, default=dict, help_text="The operation's own input, as its single-key endpoint takes it."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("keys", "filter", "names") if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError({"keys": "Give exactly one of keys, filter or names (create)."})
        return attrs


class JobItemSerializer(serializers.ModelSerializer[JobItem]):
    key = serializers.UUIDField(source="key_id", allow_null=True)
    keystore = serializers.UUIDField(source="lane")

    class Meta:
        model = JobItem
        fields = ("position", "key", "keystore", "name", "state", "outcome", "message", "attempts", "finished_at")


class JobSerializer(serializers.ModelSerializer[Job]):
    results = JobItemSerializer(source="items", many=True, read_only=True)
    eta_seconds = serializers.SerializerMethodField(help_text="Seconds left at the KMS quotas' pace; null when over.")

    class Meta:
        model = Job
        fields = (
            "id",
            "operation",
            "state",
            "total",
            "done",
            "failed",
            "eta_seconds",
            "parameters",
            "selection",
            "requester_name",
            "created_at",
            "started_at",
            "finished_at",
            "results",
        )

    def get_eta_seconds(self, job: Job) -> float | None:
        return eta_seconds(job)
