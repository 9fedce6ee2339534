"""The API's shapes of dual control (SPEC §12, §16): approval requests, decisions and the policy."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.models import MAX_APPROVALS, ApprovalRequest, RequestState
from byok_portal.api import StrictSerializer
from byok_portal.dual_control import ApprovalGroup
from keystores.models import Role


class PersonSerializer(serializers.Serializer[Any]):
    """A person as dual control counts them: ``(iss, sub)``, and their name for reading."""

    iss = serializers.CharField()
    sub = serializers.CharField()
    name = serializers.CharField()


class RequesterSerializer(PersonSerializer):
    active = serializers.BooleanField(
        help_text="False once the requester's account is disabled: the request can no longer be approved or run."
    )


class ApprovalSerializer(PersonSerializer):
    at = serializers.DateTimeField()


class ApprovalRequestSerializer(serializers.Serializer[Any]):
    """An approval request: what was asked, by whom, who approved, and how it ended."""

    id = serializers.UUIDField()
    operation = serializers.CharField()
    group = serializers.ChoiceField(choices=[g.value for g in ApprovalGroup])
    keystore = serializers.UUIDField(source="keystore_id")
    key = serializers.UUIDField(source="key_id", allow_null=True)
    parameters = serializers.DictField()
    requested_by = serializers.SerializerMethodField()
    # The metaclass takes declared fields out of the class body, so this name does not shadow Field.required.
    required = serializers.IntegerField()  # type: ignore[assignment]
    approvals = serializers.SerializerMethodField()
    state = serializers.ChoiceField(choices=RequestState.choices)
    reason = serializers.CharField(help_text="A rejection's reason.")
    result = serializers.DictField(allow_null=True, help_text="The operation's outcome, or its error (FAILED).")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(RequesterSerializer)
    def get_requested_by(self, request: ApprovalRequest) -> dict[str, Any]:
        return {
            "iss": request.requested_by_iss,
            "sub": request.requested_by_sub,
            "name": request.requested_by_name,
            "active": request.requester_active,
        }

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, request: ApprovalRequest) -> Any:
        return ApprovalSerializer(
            [{"iss": a.iss, "sub": a.sub, "name": a.display_name, "at": a.created_at} for a in request.approvals.all()],
            many=True,
        ).data


def represent(request: ApprovalRequest) -> dict[str, Any]:
    return dict(ApprovalRequestSerializer(request).data)


class RejectSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True)


def _count() -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=MAX_APPROVALS)


class ApprovalPolicySerializer(StrictSerializer):
    """A keystore's approval policy: approvals needed per operation group, who may approve, how long a request lives."""

    destroy = _count()
    disable = _count()
    change_material = _count()
    export = _count()
    membership = _count()
    approver_roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices), allow_empty=False, max_length=len(Role.choices)
    )
    expires_hours = serializers.IntegerField(min_value=1, max_value=720)
