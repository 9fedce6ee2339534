"""REST endpoints for keystores (SPEC §6): thin DRF views over ``keystores.services``.

Every endpoint starts from ``keystores.selectors``: outsiders get 404 (never learning
that a keystore exists), members whose role is too weak get 403.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.throttling import BaseThrottle

from accounts.identity import actor_from_request
from byok_portal.api import (
    API_THROTTLES,
    APPROVAL_PENDING,
    LIST_NOT_FOUND,
    VALIDATION_ERROR,
    BoundedCursorPagination,
    PortalViewSet,
    common_errors,
    id_parameter,
    invalid_state,
    validated_body,
)
from keystores import services
from keystores.filters import KeystoreFilter
from keystores.models import Keystore
from keystores.selectors import get_keystore_for, keystores_for
from keystores.serializers import (
    ConnectionTestSerializer,
    IamPolicySerializer,
    KeystoreCreateSerializer,
    KeystoreSerializer,
    KeystoreUpdateSerializer,
)

KEYSTORE_ID = id_parameter("keystore")


class KeystorePagination(BoundedCursorPagination):
    ordering = ("name", "id")


@extend_schema_view(
    list=extend_schema(
        operation_id="keystores_list",
        summary="List keystores",
        description="Keystores the caller holds a role in (superusers: all), by name.",
        responses={200: KeystoreSerializer(many=True), 400: VALIDATION_ERROR, 404: LIST_NOT_FOUND}
        | common_errors(auth_only=True),
    ),
    create=extend_schema(
        operation_id="keystores_create",
        summary="Create a keystore",
        description="Needs the global permission `keystores.add_keystore`; the creator becomes its admin.",
        request=KeystoreCreateSerializer,
        responses={201: KeystoreSerializer, 400: VALIDATION_ERROR}
        | common_errors(auth_only=True)
        | {403: common_errors()[403]},
    ),
    retrieve=extend_schema(
        operation_id="keystores_retrieve",
        parameters=[KEYSTORE_ID],
        summary="Read a keystore",
        responses={200: KeystoreSerializer} | common_errors(),
    ),
    partial_update=extend_schema(
        operation_id="keystores_partial_update",
        parameters=[KEYSTORE_ID],
        summary="Edit a keystore (admin)",
        description="Name, role ARN (same account) and auto re-upload. Account, region and external id never change.",
        request=KeystoreUpdateSerializer,
        responses={
            200: KeystoreSerializer,
            400: VALIDATION_ERROR,
            409: invalid_state("`invalid_state`: the keystore is deleted."),
        }
        | common_errors(),
    ),
    destroy=extend_schema(
        operation_id="keystores_destroy",
        parameters=[KEYSTORE_ID],
        summary="Delete a keystore (admin)",
        description="Soft delete: state `DELETED`, still readable with its audit trail. Every key must be DELETED; "
        "deleting a deleted keystore is a no-op. Covered by the `destroy` group of the approval policy.",
        responses={
            200: KeystoreSerializer,
            202: APPROVAL_PENDING,
            409: invalid_state("`invalid_state`: some keys are not DELETED yet (`live_keys`)."),
        }
        | common_errors(),
    ),
)
class KeystoreViewSet(PortalViewSet):
    """Keystores: one AWS account and region each."""

    serializer_class = KeystoreSerializer
    pagination_class = KeystorePagination
    filterset_class = KeystoreFilter
    # For the schema only (ids are UUIDs); requests are scoped in get_queryset and the selectors.
    queryset = Keystore.objects.none()

    def get_queryset(self) -> QuerySet[Keystore]:
        return keystores_for(self.request.user)

    def get_throttles(self) -> list[BaseThrottle]:
        # Connection tests call AWS: they share the lifecycle budget.
        self.throttle_scope = "lifecycle" if self.action == "test_connection" else ""
        return [throttle() for throttle in API_THROTTLES]

    def list(self, request: Request) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(KeystoreSerializer(page, many=True).data)

    def create(self, request: Request) -> Response:
        data = validated_body(KeystoreCreateSerializer, request)
        keystore = services.keystore_create(actor=actor_from_request(request), **data)
        return Response(KeystoreSerializer(keystore).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(KeystoreSerializer(get_keystore_for(request.user, pk)).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        data = validated_body(KeystoreUpdateSerializer, request)
        keystore = services.keystore_update(actor=actor_from_request(request), keystore_id=pk, **data)
        return Response(KeystoreSerializer(keystore).data)

    def destroy(self, request: Request, pk: str) -> Response:
        keystore = services.keystore_delete(actor=actor_from_request(request), keystore_id=pk)
        return Response(KeystoreSerializer(keystore).data)

    @extend_schema(
        operation_id="keystores_test_connection",
        parameters=[KEYSTORE_ID],
        summary="Test the AWS connection (custodian)",
        description="Assumes the keystore's role and makes one harmless KMS call. AWS refusals are not an HTTP "
        "error: they come back as `ok: false` with AWS's error verbatim, and are remembered and audited.",
        request=None,
        responses={200: ConnectionTestSerializer, 400: VALIDATION_ERROR} | common_errors(),
    )
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        keystore = services.keystore_test_connection(actor=actor_from_request(request), keystore_id=pk)
        result = {"ok": bool(keystore.last_check_ok), "error": keystore.last_check_error or None}
        return Response(ConnectionTestSerializer({**result, "at": keystore.last_check_at}).data)

    @extend_schema(
        operation_id="keystores_iam_policy",
        parameters=[KEYSTORE_ID],
        summary="IAM policies for the keystore's role",
        description="Copy-ready trust policy and least-privilege permissions policy.",
        responses={200: IamPolicySerializer} | common_errors(),
    )
    @action(detail=True, methods=["get"], url_path="iam-policy")
    def iam_policy(self, request: Request, pk: str) -> Response:
        keystore = get_keystore_for(request.user, pk)
        return Response(IamPolicySerializer(services.iam_policies(keystore)).data)


router = SimpleRouter()
router.register("keystores", KeystoreViewSet, basename="api-keystore")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
