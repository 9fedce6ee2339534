"""REST endpoints for keys (SPEC §6): thin DRF views over the registry of operations.

Reads come from :mod:`keys.selectors`; every write is one entry of
:data:`keys.operations.REGISTRY`, whose service checks the caller's role and the
lifecycle table under the key's row lock and audits the outcome. The lifecycle
actions (``POST /keys/{id}/<operation>/``) are generated from the registry, and their
OpenAPI description is written from ``keys.lifecycle.LIFECYCLE``, the table that
enforces them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
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
    AWS_ERROR,
    HSM_ERROR,
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
from byok_portal.errors import NotFound
from byok_portal.vocabulary import Operation
from keys import selectors, services
from keys.filters import KeyFilter
from keys.lifecycle import LIFECYCLE
from keys.models import Key, KeyMaterial
from keys.operations import API_ACTIONS, REGISTRY, KeyOperation
from keys.serializers import (
    DownloadSerializer,
    KeyCreateSerializer,
    KeyMaterialSerializer,
    KeySerializer,
    KeyUpdateSerializer,
    MaterialListSerializer,
    operation_description,
    replica_rows,
    represent_rows,
)
from keys.services import WrappedDownload

# The endpoints that run an operation, by DRF action name: the lifecycle row (for 409 bodies) and the throttle budget.
OPERATIONS: dict[str, Operation] = {
    "create": Operation.CREATE,
    "partial_update": Operation.UPDATE,
    **{entry.operation.value: entry.operation for entry in API_ACTIONS},
}
DOWNLOAD_ACTIONS = {op.value for op in (Operation.PREPARE_DOWNLOAD, Operation.DOWNLOAD, Operation.WITHDRAW_DOWNLOAD)}


def key_id_from_url(pk: str) -> uuid.UUID:
    """The ``{id}`` of a key path as a UUID; anything else is a key that does not exist."""
    try:
        return uuid.UUID(pk)
    except ValueError as exc:
        raise NotFound("Key not found.") from exc


KEY_ID = id_parameter("key")


class KeyPagination(BoundedCursorPagination):
    # Matches the index (keystore, state, -created_at): a filtered first page is one range scan.
    ordering = ("-created_at", "-id")


def _action_schema(
    operation: Operation,
    summary: str,
    *,
    request: Any = None,
    ok: int = status.HTTP_200_OK,
    ok_response: Any = KeySerializer,
    extra: dict[int, Any] | None = None,
) -> Callable[[Any], Any]:
    return extend_schema(
        operation_id=f"keys_{operation.value}",
        summary=summary,
        parameters=[KEY_ID],
        description=operation_description(operation),
        request=request,
        responses={
            ok: ok_response,
            400: VALIDATION_ERROR,
            409: invalid_state("`invalid_state`: not allowed in the key's state; `allowed_states` lists where it is."),
            502: AWS_ERROR,
            503: HSM_ERROR,
        }
        | common_errors()
        | (extra or {}),
    )


@extend_schema_view(
    list=extend_schema(
        operation_id="keys_list",
        summary="List keys",
        description="Keys in the keystores the caller holds a role in (superusers: all), newest first.",
        responses={200: KeySerializer(many=True), 400: VALIDATION_ERROR, 404: LIST_NOT_FOUND}
        | common_errors(auth_only=True),
    ),
    create=extend_schema(
        operation_id="keys_create",
        summary="Create a key (custodian)",
        description="Creates a KMS key (`Origin=EXTERNAL`), generates 256-bit material, imports it and sets "
        "alias and tags. The new key is `ACTIVE`, KMS `ENABLED`. An unknown keystore, or one the caller "
        "is not a member of, is a 404.",
        request=KeyCreateSerializer,
        responses={
            201: KeySerializer,
            400: VALIDATION_ERROR,
            409: invalid_state("`invalid_state`: the keystore is deleted."),
            502: AWS_ERROR,
            503: HSM_ERROR,
        }
        | common_errors(),
    ),
    retrieve=extend_schema(
        operation_id="keys_retrieve",
        summary="Read a key",
        parameters=[KEY_ID],
        responses={200: KeySerializer} | common_errors(),
    ),
    partial_update=_action_schema(Operation.UPDATE, REGISTRY[Operation.UPDATE].summary, request=KeyUpdateSerializer),
)
class KeyViewSet(PortalViewSet):
    """Keys and their lifecycle (SPEC §2)."""

    serializer_class = KeySerializer
    pagination_class = KeyPagination
    filterset_class = KeyFilter
    # For the schema only (ids are UUIDs); requests are scoped in get_queryset and the selectors.
    queryset = Key.objects.none()

    @property
    def lifecycle_operation(self) -> Operation | None:
        """Read by ``byok_portal.api.exception_handler`` to audit an unexpected error as this operation's."""
        return OPERATIONS.get(self.action or "")

    @property
    def allowed_states(self) -> list[str] | None:
        """Read by ``byok_portal.api.exception_handler`` to list ``allowed_states`` in 409s of an operation."""
        operation = self.lifecycle_operation
        row = LIFECYCLE.get(operation) if operation is not None else None
        return sorted(str(state) for state in row.allowed) if row is not None else None

    def get_queryset(self) -> QuerySet[Key]:
        return selectors.keys_for(self.request.user)

    def get_throttles(self) -> list[BaseThrottle]:
        if self.action in DOWNLOAD_ACTIONS:
            self.throttle_scope = "download"
        elif self.action in OPERATIONS:
            self.throttle_scope = "lifecycle"
        else:
            self.throttle_scope = ""
        return [throttle() for throttle in API_THROTTLES]

    # --- reads ---------------------------------------------------------------------

    def list(self, request: Request) -> Response:
        # Rows, not instances: a page is written straight from the selected columns.
        rows = self.filter_queryset(selectors.key_rows(request.user))
        with selectors.native_timestamps():
            page = self.paginate_queryset(rows) or []
        # Only a page with multi-Region keys costs the one query for their replicas.
        replicas = (
            replica_rows([row["id"] for row in page if row["multi_region"]])
            if any(row["multi_region"] for row in page)
            else {}
        )
        return self.get_paginated_response(
            represent_rows([{**row, "replicas": replicas.get(row["id"], [])} for row in page])
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(KeySerializer(selectors.get_key_for(request.user, key_id_from_url(pk))).data)

    @extend_schema(
        summary="The key's material versions (never material)",
        parameters=[KEY_ID],
        responses={200: MaterialListSerializer} | common_errors(),
    )
    @action(detail=True, methods=["get"], url_path="materials")
    def materials(self, request: Request, pk: str) -> Response:
        """Every material version the key ever had (SPEC §10), oldest first: ids, check values, states, dates."""
        key = selectors.get_key_for(request.user, key_id_from_url(pk))
        versions = KeyMaterial.objects.filter(key=key).order_by("version")
        return Response({"results": KeyMaterialSerializer(versions, many=True).data})

    # --- writes: create and edit; the lifecycle actions follow the class ---------------

    def create(self, request: Request) -> Response:
        data = validated_body(KeyCreateSerializer, request)
        done = REGISTRY[Operation.CREATE].run(actor_from_request(request), data["keystore"], data)
        return Response(KeySerializer(done.key).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        return _run(REGISTRY[Operation.UPDATE], request, pk)


def _run(entry: KeyOperation, request: Request, pk: str) -> Response:
    """One operation on one key, from the registry entry: the caller's role, the body, the service."""
    actor = actor_from_request(request)
    if entry.role_before_input:
        # The caller's role first (audited if refused): an outsider learns nothing from how the body is judged.
        services.authorize(actor=actor, key_id=key_id_from_url(pk), operation=entry.operation)
    data = validated_body(entry.body, request)
    if entry.operation == Operation.DOWNLOAD:
        wrapped: WrappedDownload = entry.release(actor, key_id_from_url(pk))
        return Response(DownloadSerializer(wrapped).data)
    done = entry.run(actor, key_id_from_url(pk), data)
    answer = entry.answer or KeySerializer
    return Response(answer(done.key).data, status=status.HTTP_201_CREATED if entry.created else status.HTTP_200_OK)


def _lifecycle_action(entry: KeyOperation) -> Callable[..., Response]:
    """``POST /keys/{id}/<slug>/``: the registry entry's operation, documented from its lifecycle row."""

    def run(self: KeyViewSet, request: Request, pk: str) -> Response:
        return _run(entry, request, pk)

    run.__name__ = run.__qualname__ = entry.operation.value
    run.__doc__ = entry.row.consequence
    # The download answers with the wrapped material; the others with the key (or the entry's answer).
    ok_response = DownloadSerializer if entry.operation == Operation.DOWNLOAD else entry.answer or KeySerializer
    schema = _action_schema(
        entry.operation,
        entry.summary,
        request=entry.body,
        ok=status.HTTP_201_CREATED if entry.created else status.HTTP_200_OK,
        ok_response=ok_response,
        extra=({403: OpenApiResponse(ErrorSerializer, description=entry.forbidden)} if entry.forbidden else {})
        | ({202: APPROVAL_PENDING} if entry.approval_group is not None else {}),
    )
    documented: Callable[..., Response] = schema(action(detail=True, methods=["post"], url_path=entry.slug)(run))
    return documented


for _entry in API_ACTIONS:
    setattr(KeyViewSet, _entry.operation.value, _lifecycle_action(_entry))


router = SimpleRouter()
router.register("keys", KeyViewSet, basename="api-key")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
