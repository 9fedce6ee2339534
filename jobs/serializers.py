"""The job resource of ``/api/v1/jobs/`` (SPEC §16) and its request body."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from byok_portal.api import StrictSerializer
from jobs.models import Job, JobItem
from jobs.services import BULK_OPERATIONS, RESULTS_PAGE_SIZE, ResultsPage, approval_states, eta_seconds
from keys.filters import KeyFilter


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

    def validate_filter(self, value: dict[str, Any]) -> dict[str, Any]:
        # The key list's own filters, each a string as in its query string: anything else would be
        # ignored by the filter set, silently widening the job to keys nobody meant.
        unknown = sorted(name for name in value if name not in KeyFilter.base_filters)
        if unknown:
            raise serializers.ValidationError(f"Unknown filter(s): {', '.join(unknown)}.")
        not_text = sorted(name for name, item in value.items() if not isinstance(item, str))
        if not_text:
            raise serializers.ValidationError(f"Give each filter as a string: {', '.join(not_text)}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("keys", "filter", "names") if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError({"keys": "Give exactly one of keys, filter or names (create)."})
        return attrs


class ResultsQuerySerializer(StrictSerializer):
    """``GET /jobs/{id}/``'s query: which page of the per-key results to send."""

    after = serializers.IntegerField(
        min_value=0,
        default=0,
        help_text="Send the results that ended after this many (the last answer's `next_after`); 0: from the first.",
    )
    limit = serializers.IntegerField(
        min_value=0, max_value=RESULTS_PAGE_SIZE, default=RESULTS_PAGE_SIZE, help_text="At most this many results."
    )


class JobItemSerializer(serializers.ModelSerializer[JobItem]):
    key = serializers.UUIDField(source="key_id", allow_null=True)
    keystore = serializers.UUIDField(source="lane")
    seq = serializers.IntegerField(source="settled_seq", help_text="Its place in the order the job's keys ended.")
    approval_request = serializers.UUIDField(
        source="approval_request_id", allow_null=True, help_text="AWAITING_APPROVAL: the request holding the key."
    )
    approval_state = serializers.SerializerMethodField(help_text="That request's state now (null: none).")

    class Meta:
        model = JobItem
        fields = (
            "seq",
            "position",
            "key",
            "keystore",
            "name",
            "state",
            "outcome",
            "message",
            "attempts",
            "finished_at",
            "approval_request",
            "approval_state",
        )

    def get_approval_state(self, item: JobItem) -> str | None:
        return item.approval_request.state if item.approval_request is not None else None


class JobSerializer(serializers.ModelSerializer[Job]):
    """A job's counts, and one page of its per-key results (``context["results"]``, a :class:`ResultsPage`).

    Results come in the order the keys ended, so a poll asks only for those since its last
    look (``?after=<next_after>``) and its answer stays small however large the job.
    """

    eta_seconds = serializers.SerializerMethodField(help_text="Seconds left at the KMS quotas' pace; null when over.")
    cancelled = serializers.SerializerMethodField(help_text="Keys the job's cancellation left alone.")
    approvals = serializers.SerializerMethodField(
        help_text='The approval requests holding keys awaiting approval, by their state now: {"PENDING": 2, …}.'
    )
    results = serializers.SerializerMethodField(help_text="Keys that ended after `after`, in the order they ended.")
    next_after = serializers.SerializerMethodField(help_text="What to give as `after` to get the results after these.")
    more_results = serializers.SerializerMethodField(help_text="More results have ended than this page holds.")

    class Meta:
        model = Job
        fields = (
            "id",
            "operation",
            "state",
            "total",
            "done",
            "failed",
            "awaiting_approval",
            "approvals",
            "cancelled",
            "settled",
            "eta_seconds",
            "parameters",
            "selection",
            "requester_name",
            "created_at",
            "started_at",
            "finished_at",
            "results",
            "next_after",
            "more_results",
        )
        extra_kwargs = {
            "awaiting_approval": {"help_text": "Keys held by their approval policy: each names its request."},
            "settled": {"help_text": "Keys that ended, however they did."},
        }

    def _page(self) -> ResultsPage:
        page: ResultsPage = self.context["results"]
        return page

    def get_eta_seconds(self, job: Job) -> float | None:
        return eta_seconds(job)

    def get_cancelled(self, job: Job) -> int:
        return job.settled - job.done - job.failed - job.awaiting_approval

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_approvals(self, job: Job) -> dict[str, int]:
        return approval_states(job)

    @extend_schema_field(JobItemSerializer(many=True))
    def get_results(self, job: Job) -> list[dict[str, Any]]:
        return list(JobItemSerializer(self._page().items, many=True).data)

    def get_next_after(self, job: Job) -> int:
        return self._page().next_after

    def get_more_results(self, job: Job) -> bool:
        return self._page().more
