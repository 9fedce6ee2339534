"""REST endpoints of dual control (SPEC §12, §16): approval requests, their decisions, and each keystore's policy."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.throttling import BaseThrottle

from accounts.identity import actor_from_request
from approvals import services
from approvals.filters import ApprovalFilter
from approvals.models import ApprovalRequest
from approvals.serializers import ApprovalPolicySerializer, ApprovalRequestSerializer, RejectSerializer
from byok_portal.api import (
    API_THROTTLES,
    APPROVAL_PENDING,
    LIST_NOT_FOUND,
    VALIDATION_ERROR,
    BoundedCursorPagination,
    ErrorSerializer,
    PortalViewSet,
    common_errors,
    id_parameter,
    invalid_state,
    validated_body,
)
from keystores.selectors import get_keystore_for

REQUEST_ID = id_parameter("approval request")
KEYSTORE_ID = id_parameter("keystore")
DECISION_ERRORS = {
    403: OpenApiResponse(
        ErrorSerializer,
        description="`self_approval`: the requester (any account of the same person) cannot decide their own "
        "request; `permission_denied`: no approver role in the keystore (cancel: not the requester).",
    ),
    409: invalid_state("`already_decided`: the request has ended or reached its quorum."),
}


class ApprovalPagination(BoundedCursorPagination):
    ordering = ("-created_at", "-id")


def _decision(summary: str, description: str, request: Any = None) -> Any:
    return extend_schema(
        summary=summary,
        description=description,
        parameters=[REQUEST_ID],
        request=request,
        responses={200: ApprovalRequestSerializer, 400: VALIDATION_ERROR} | common_errors() | DECISION_ERRORS,
    )


@extend_schema_view(
    list=extend_schema(
        operation_id="approvals_list",
        summary="List approval requests",
        description="Requests of the keystores the caller holds a role in, newest first.",
        responses={200: ApprovalRequestSerializer(many=True), 400: VALIDATION_ERROR, 404: LIST_NOT_FOUND}
        | common_errors(auth_only=True),
    ),
    retrieve=extend_schema(
        operation_id="approvals_retrieve",
        summary="Read an approval request",
        parameters=[REQUEST_ID],
        responses={200: ApprovalRequestSerializer} | common_errors(),
    ),
)
class ApprovalViewSet(PortalViewSet):
    """Approval requests (SPEC §12): read, approve, reject, cancel."""

    serializer_class = ApprovalRequestSerializer
    pagination_class = ApprovalPagination
    filterset_class = ApprovalFilter
    queryset = ApprovalRequest.objects.none()  # for the schema; requests are scoped in get_queryset

    def get_queryset(self) -> QuerySet[ApprovalRequest]:
        requests: QuerySet[ApprovalRequest] = services.requests_for(self.request.user).prefetch_related("approvals")
        return requests

    def get_throttles(self) -> list[BaseThrottle]:
        self.throttle_scope = "lifecycle" if self.action in {"approve", "reject", "cancel"} else ""
        return [throttle() for throttle in API_THROTTLES]

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(ApprovalRequestSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ApprovalRequestSerializer(services.get_request_for(request.user, pk)).data)

    @_decision(
        "Approve a request",
        "Counts the caller's approval (a person, by `(iss, sub)`, counts once). The approval that reaches the "
        "quorum hands the operation to the background worker, which runs it as the requester.",
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        done = services.approve(actor=actor_from_request(request), request_id=pk)
        return Response(ApprovalRequestSerializer(services.get_request_for(request.user, done.pk)).data)

    @_decision("Reject a request", "Any one rejection ends the request (`REJECTED`).", request=RejectSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        data = validated_body(RejectSerializer, request)
        done = services.reject(actor=actor_from_request(request), request_id=pk, reason=data.get("reason", ""))
        return Response(ApprovalRequestSerializer(services.get_request_for(request.user, done.pk)).data)

    @_decision("Cancel a request (its requester)", "The requester withdraws the request (`CANCELLED`).")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        done = services.cancel(actor=actor_from_request(request), request_id=pk)
        return Response(ApprovalRequestSerializer(services.get_request_for(request.user, done.pk)).data)

    @_decision(
        "End a stalled approved request (keystore admin)",
        "Ends an `APPROVED` request whose run is not alive — it never started, or its lease "
        "(`BYOK_APPROVAL_LEASE_SECONDS`) is over — `FAILED` with `ended_by_admin` (or by the outcome of a lost run "
        "that had already done the operation). `409 not_stalled` for any other state or while a run holds it.",
    )
    @action(detail=True, methods=["post"])
    def end(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        done = services.end_stalled(actor=actor_from_request(request), request_id=pk)
        return Response(ApprovalRequestSerializer(services.get_request_for(request.user, done.pk)).data)


class ApprovalPolicyViewSet(PortalViewSet):
    """``/keystores/{id}/approval-policy/``: read it (members), change it (admins, under the policy in force)."""

    @extend_schema(
        operation_id="keystores_approval_policy_retrieve",
        summary="Read a keystore's approval policy",
        parameters=[KEYSTORE_ID],
        responses={200: ApprovalPolicySerializer} | common_errors(),
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ApprovalPolicySerializer(services.policy_of(get_keystore_for(request.user, pk))).data)

    @extend_schema(
        operation_id="keystores_approval_policy_update",
        summary="Change a keystore's approval policy (admin)",
        description="Itself covered by the `membership` group of the policy in force: with approvals needed "
        "there, this answers 202 with the approval request, and the change happens once others approve it.",
        parameters=[KEYSTORE_ID],
        request=ApprovalPolicySerializer,
        responses={
            200: ApprovalPolicySerializer,
            202: APPROVAL_PENDING,
            400: VALIDATION_ERROR,
            409: invalid_state("`invalid_state`: the keystore is deleted."),
        }
        | common_errors(),
    )
    def update(self, request: Request, pk: str) -> Response:
        data = validated_body(ApprovalPolicySerializer, request)
        keystore = get_keystore_for(request.user, pk)
        policy = services.policy_update(actor=actor_from_request(request), keystore_id=keystore.pk, values=data)
        return Response(ApprovalPolicySerializer(policy).data, status=status.HTTP_200_OK)


router = SimpleRouter()
router.register("approvals", ApprovalViewSet, basename="api-approval")
_policy = ApprovalPolicyViewSet.as_view({"get": "retrieve", "put": "update"})
urlpatterns: list[URLPattern | URLResolver] = [
    *router.urls,
    path("keystores/<str:pk>/approval-policy/", _policy, name="api-approval-policy"),
]
