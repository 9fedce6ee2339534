"""REST endpoints for keys (SPEC §6): thin DRF views over ``keys.services``.

Reads start from ``keystores.selectors``; every write is one service call, which
checks the caller's role and the lifecycle table under the key's row lock and
audits the outcome. The OpenAPI description of each action is written from
``keys.lifecycle.LIFECYCLE``, the same table that enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.throttling import BaseThrottle

from accounts.identity import actor_from_request
from byok_portal.api import (
    API_THROTTLES,
    AWS_ERROR,
    LIST_NOT_FOUND,
    VALIDATION_ERROR,
    BoundedCursorPagination,
    ErrorSerializer,
    StrictFilterBackend,
    common_errors,
    id_parameter,
    invalid_state,
    validated_body,
)
from keys import services
from keys.filters import KeyFilter
from keys.lifecycle import Operation
from keys.models import Key
from keys.serializers import (
    ROW_COLUMNS,
    DownloadSerializer,
    KeyCreateSerializer,
    KeySerializer,
    KeyUpdateSerializer,
    PrepareDownloadSerializer,
    ScheduleDeletionSerializer,
    operation_description,
    represent_rows,
)
from keystores.selectors import get_key_for, keys_for

# Which lifecycle row each endpoint runs (for 409 bodies) and which throttle budget it spends.
OPERATIONS: dict[str, Operation] = {
    "create": Operation.CREATE,
    "partial_update": Operation.UPDATE,
    "deactivate": Operation.DEACTIVATE,
    "activate": Operation.ACTIVATE,
    "upload": Operation.UPLOAD,
    "renew": Operation.RENEW,
    "schedule_deletion": Operation.SCHEDULE_DELETION,
    "cancel_deletion": Operation.CANCEL_DELETION,
    "prepare_download": Operation.PREPARE_DOWNLOAD,
    "download": Operation.DOWNLOAD,
}
DOWNLOAD_ACTIONS = {"prepare_download", "download"}


# Whether a download is prepared, without loading the public key itself.
DOWNLOAD_PREPARED = ExpressionWrapper(~Q(download_public_key=""), output_field=BooleanField())


# Built once: ``values()`` sets up 17 columns and a join, and every request would
# otherwise repeat it. Only ever cloned (``keys_for`` filters a copy), never evaluated.
_ROWS: QuerySet[Key, dict[str, Any]] = Key.objects.values(
    *ROW_COLUMNS, "replaced_by", download_prepared=DOWNLOAD_PREPARED
)


def key_rows(user: Any) -> QuerySet[Key, dict[str, Any]]:
    """The keys ``user`` may see, as the column dicts a list page is built from.

    No model instances (``keys.serializers.represent_rows`` writes the JSON straight
    from the columns), and ``replaced_by``, the reverse side of the one-to-one, as a
    LEFT JOIN on the unique ``replaces_id``: at most one successor, so no row repeats,
    and it compiles in a fraction of a correlated subquery's time. The FilterSet and
    the cursor work on it as on model instances (the cursor reads ``created_at`` by name).
    """
    return keys_for(user, within=_ROWS)


@contextmanager
def native_timestamps() -> Iterator[None]:
    """Within the block, the ORM's queries parse ``timestamptz`` with psycopg's C loader.

    Django registers a pure-Python subclass of psycopg's loader only to pin the
    returned ``tzinfo`` to its connection time zone; with ``USE_TZ`` that zone is UTC,
    which is also the session ``TimeZone`` Django sets, and for that setting psycopg's
    own loader returns the very same ``datetime.timezone.utc`` values. A key page
    parses four timestamps a row; this is a third of the page query's Python time.
    Anything else (another time zone, another database) keeps Django's loader.
    """
    if not (settings.USE_TZ and connection.vendor == "postgresql" and connection.timezone_name == "UTC"):
        yield
        return
    from psycopg.postgres import adapters
    from psycopg.pq import Format

    fast = adapters.get_loader(adapters.types["timestamptz"].oid, Format.TEXT)

    def use_native_loader(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        context["cursor"].cursor.adapters.register_loader("timestamptz", fast)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(use_native_loader):
        yield


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
        }
        | common_errors(),
    ),
    retrieve=extend_schema(
        operation_id="keys_retrieve",
        summary="Read a key",
        parameters=[KEY_ID],
        responses={200: KeySerializer} | common_errors(),
    ),
    partial_update=_action_schema(
        Operation.UPDATE,
        "Edit a key (custodian)",
        request=KeyUpdateSerializer,
    ),
)
class KeyViewSet(viewsets.GenericViewSet):
    """Keys and their lifecycle (SPEC §2)."""

    serializer_class = KeySerializer
    filter_backends = [StrictFilterBackend]
    pagination_class = KeyPagination
    filterset_class = KeyFilter
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]
    # Any segment reaches the view, which answers a JSON 404 for what is not a UUID (the schema says uuid).
    lookup_value_regex = "[^/]+"
    # For the schema only (ids are UUIDs); requests are scoped in get_queryset and the selectors.
    queryset = Key.objects.none()

    @property
    def lifecycle_operation(self) -> Operation | None:
        """Read by ``byok_portal.api.exception_handler`` to list ``allowed_states`` in 409s."""
        return OPERATIONS.get(self.action or "")

    def get_queryset(self) -> QuerySet[Key]:
        return keys_for(self.request.user)

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
        # Rows, not instances: a page is built straight from the selected columns.
        rows = self.filter_queryset(key_rows(request.user))
        with native_timestamps():
            page = self.paginate_queryset(rows)
        return self.get_paginated_response(represent_rows(page or []))

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(KeySerializer(get_key_for(request.user, pk)).data)

    # --- writes ----------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        data = validated_body(KeyCreateSerializer, request)
        key = services.key_create(
            actor=actor_from_request(request),
            keystore_id=data["keystore"],
            name=data["name"],
            alias=data["alias"],
            tags=data["tags"],
            expires=data["expires"],
        )
        return Response(KeySerializer(key).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        # The caller's role first (audited if refused): an outsider learns nothing from how the body is judged.
        services.authorize(actor=actor_from_request(request), key_id=pk, operation=Operation.UPDATE)
        changes = validated_body(KeyUpdateSerializer, request)
        key = services.key_update(actor=actor_from_request(request), key_id=pk, **changes)
        return Response(KeySerializer(key).data)

    @_action_schema(Operation.DEACTIVATE, "Deactivate a key")
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        return Response(KeySerializer(services.key_deactivate(actor=actor_from_request(request), key_id=pk)).data)

    @_action_schema(Operation.ACTIVATE, "Activate a key")
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        return Response(KeySerializer(services.key_activate(actor=actor_from_request(request), key_id=pk)).data)

    @_action_schema(Operation.UPLOAD, "Re-upload the key material to KMS")
    @action(detail=True, methods=["post"])
    def upload(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        return Response(KeySerializer(services.key_upload(actor=actor_from_request(request), key_id=pk)).data)

    @_action_schema(Operation.RENEW, "Renew a key (returns the new key)", ok=status.HTTP_201_CREATED)
    @action(detail=True, methods=["post"])
    def renew(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        new_key = services.key_renew(actor=actor_from_request(request), key_id=pk)
        return Response(KeySerializer(new_key).data, status=status.HTTP_201_CREATED)

    @_action_schema(
        Operation.SCHEDULE_DELETION,
        "Schedule a key's deletion",
        request=ScheduleDeletionSerializer,
    )
    @action(detail=True, methods=["post"], url_path="schedule-deletion")
    def schedule_deletion(self, request: Request, pk: str) -> Response:
        data = validated_body(ScheduleDeletionSerializer, request)
        key = services.key_schedule_deletion(
            actor=actor_from_request(request), key_id=pk, pending_window_days=data.get("pending_window_days")
        )
        return Response(KeySerializer(key).data)

    @_action_schema(Operation.CANCEL_DELETION, "Cancel a key's scheduled deletion")
    @action(detail=True, methods=["post"], url_path="cancel-deletion")
    def cancel_deletion(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        key = services.key_cancel_deletion(actor=actor_from_request(request), key_id=pk)
        return Response(KeySerializer(key).data)

    @_action_schema(
        Operation.PREPARE_DOWNLOAD,
        "Prepare a download (first person)",
        request=PrepareDownloadSerializer,
    )
    @action(detail=True, methods=["post"], url_path="prepare-download")
    def prepare_download(self, request: Request, pk: str) -> Response:
        # The caller's role first, as in partial_update.
        services.authorize(actor=actor_from_request(request), key_id=pk, operation=Operation.PREPARE_DOWNLOAD)
        data = validated_body(PrepareDownloadSerializer, request)
        key = services.key_prepare_download(
            actor=actor_from_request(request), key_id=pk, public_key_pem=data["public_key"]
        )
        return Response(KeySerializer(key).data)

    @_action_schema(
        Operation.DOWNLOAD,
        "Download the wrapped material (second person)",
        ok_response=DownloadSerializer,
        extra={
            403: OpenApiResponse(
                ErrorSerializer,
                description="`permission_denied` (role too weak) or `two_person_rule`: "
                "the person who prepared the download cannot download it.",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def download(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        wrapped = services.key_download(actor=actor_from_request(request), key_id=pk)
        return Response(DownloadSerializer(wrapped).data)


router = SimpleRouter()
router.register("keys", KeyViewSet, basename="api-key")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
