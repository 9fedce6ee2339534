"""REST endpoints for keys (SPEC §6): thin DRF views over ``keys.services``.

Reads start from ``keystores.selectors``; every write is one service call, which
checks the caller's role and the lifecycle table under the key's row lock and
audits the outcome. The OpenAPI description of each action is written from
``keys.lifecycle.LIFECYCLE``, the same table that enforces it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, Field, Q, QuerySet
from django.urls import URLPattern, URLResolver
from django_filters import utils as filter_utils
from django_filters.constants import EMPTY_VALUES
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
    AWS_ERROR,
    LIST_NOT_FOUND,
    VALIDATION_ERROR,
    BoundedCursorPagination,
    ErrorSerializer,
    PortalViewSet,
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
    PreparedKeySerializer,
    PrepareDownloadSerializer,
    ScheduleDeletionSerializer,
    operation_description,
    represent_rows,
)
from keystores.selectors import get_key_for, is_superuser, keys_for

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
    "withdraw_download": Operation.WITHDRAW_DOWNLOAD,
}
DOWNLOAD_ACTIONS = {"prepare_download", "download", "withdraw_download"}


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


# --- compiled key pages ------------------------------------------------------------------
#
# A key page's SQL depends only on its *shape*: whether the caller is a superuser, which
# filters are set, and the cursor's ordering, position lookup and slice. Each shape is
# compiled once, by the same code as the uncached path (``key_rows`` scoping, the
# FilterSet's own ``filter_queryset`` and DRF's cursor steps), from sentinel values; each
# sentinel must come out of the compiler as exactly one parameter, whose position then
# takes this request's value, converted by the same model field the ORM converts it with.
# Shapes that do not fit (an unbound user, a ``method=`` filter such as ``search``, a
# non-exact lookup) take the uncached ORM path.


class _Sentinel:
    """One sentinel per variable of a shape, found among the compiled parameters by type and value."""

    USER_PK = 987_654_321_987_654_321
    POSITION = "1901-02-03 04:05:06.070809+00:00"
    BY_FIELD: dict[str, Any] = {
        "UUIDFilter": uuid.UUID("5e471e15-0000-4000-8000-5e471e15c0de"),
        "ChoiceFilter": "sentinel-choice-5e471e15",
        "CharFilter": "sentinel-char-5e471e15",
    }


@dataclass(frozen=True)
class _CompiledPage:
    sql: str
    params: tuple[Any, ...]
    # (parameter position, what fills it): "user", "position" or a filter name.
    slots: tuple[tuple[int, str], ...]
    names: tuple[str, ...]
    columns: tuple[Any, ...]  # the selected expressions, for their converters


_COMPILED: dict[tuple[Any, ...], _CompiledPage] = {}
_COMPILED_MAX = 256


def _db_value(field_name: str, value: Any) -> Any:
    """``value`` as the ORM sends it for an exact/lt/gt lookup on ``field_name``."""
    field = Key._meta.get_field(field_name)
    assert isinstance(field, Field)
    return field.get_db_prep_value(value, connection, prepared=False)


@cache
def _key_filter_rules() -> tuple[KeyFilter, Any]:
    """``KeyFilter``'s filters and the form class it validates with, built once.

    ``FilterSet.__init__`` deep-copies every filter and ``FilterSet.form`` builds a new
    form class per request; the form itself (which deep-copies its fields) is still
    instantiated per request, from the FilterSet's own ``get_form_class``.
    """
    rules = KeyFilter(queryset=_ROWS)
    return rules, rules.get_form_class()


def _cacheable_filters(filterset: KeyFilter, cleaned_data: dict[str, Any]) -> dict[str, Any] | None:
    """The filters this request applies, by name, if every one is a plain exact lookup."""
    applied: dict[str, Any] = {}
    for name, value in cleaned_data.items():
        if value in EMPTY_VALUES:
            continue  # not applied by ``Filter.filter`` either
        filter_ = filterset.filters[name]
        kind = type(filter_).__name__
        if (
            kind not in _Sentinel.BY_FIELD
            or filter_.method is not None
            or filter_.lookup_expr != "exact"
            or filter_.exclude
            or filter_.distinct
            or value == getattr(filter_, "null_value", object())
        ):
            return None
        applied[name] = value
    return applied


class _PageRecorder:
    """Stands in for the queryset in DRF's ``CursorPagination.paginate_queryset``.

    Records the ordering and cursor lookup DRF asks for; the slice runs the compiled SQL.
    """

    def __init__(self, request: Request, filterset: KeyFilter, applied: dict[str, Any]):
        self.request, self.filterset, self.applied = request, filterset, applied
        self.ordering: tuple[str, ...] = ()
        self.position: tuple[str, Any] | None = None

    def order_by(self, *ordering: str) -> _PageRecorder:
        self.ordering = ordering
        return self

    def filter(self, **kwargs: Any) -> _PageRecorder:
        ((lookup, value),) = kwargs.items()
        field_name, _, kind = lookup.partition("__")
        if kind not in ("lt", "gt"):
            raise ValueError(f"unexpected cursor lookup {lookup!r}")
        self.position = (lookup, _db_value(field_name, value))  # raises as the ORM would
        return self

    def __getitem__(self, page: slice) -> list[dict[str, Any]]:
        user = self.request.user
        superuser = is_superuser(user)
        shape = (
            superuser,
            tuple(sorted(self.applied)),
            self.ordering,
            self.position[0] if self.position else None,
            page.start,
            page.stop,
        )
        compiled = _COMPILED.get(shape)
        if compiled is None:
            compiled = _compile(superuser, tuple(sorted(self.applied)), self.ordering, self.position, page)
            if len(_COMPILED) < _COMPILED_MAX:
                _COMPILED[shape] = compiled
        values = {"user": _db_value_user(user)}
        if self.position is not None:
            values["position"] = self.position[1]
        for name, value in self.applied.items():
            values[name] = _db_value(self.filterset.filters[name].field_name, value)
        params = list(compiled.params)
        for index, slot in compiled.slots:
            params[index] = values[slot]
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        compiler = Key.objects.none().query.get_compiler(connection=connection)
        converters = compiler.get_converters(compiled.columns)
        if converters:
            rows = list(compiler.apply_converters(rows, converters))
        return [dict(zip(compiled.names, row, strict=True)) for row in rows]


def _db_value_user(user: Any) -> Any:
    from keystores.models import Membership

    return Membership._meta.get_field("user").get_db_prep_value(user.pk, connection, prepared=False)


def _compile(
    superuser: bool,
    filters: tuple[str, ...],
    ordering: tuple[str, ...],
    position: tuple[str, Any] | None,
    page: slice,
) -> _CompiledPage:
    """One shape's SQL, built by the uncached path's own code from sentinel values."""
    from accounts.models import User

    user = User(pk=_Sentinel.USER_PK, is_superuser=superuser)
    rows = key_rows(user)
    filterset = KeyFilter(queryset=rows)
    sentinels: dict[str, Any] = {}
    cleaned: dict[str, Any] = {}
    for name in filterset.filters:
        if name in filters:
            cleaned[name] = _Sentinel.BY_FIELD[type(filterset.filters[name]).__name__]
            sentinels[name] = _db_value(filterset.filters[name].field_name, cleaned[name])
        else:
            cleaned[name] = None
    filterset.form.cleaned_data = cleaned
    rows = filterset.filter_queryset(rows).order_by(*ordering)
    if position is not None:
        sentinels["position"] = _db_value(position[0].partition("__")[0], _Sentinel.POSITION)
        rows = rows.filter(**{position[0]: _Sentinel.POSITION})
    if not superuser:
        sentinels["user"] = _db_value_user(user)
    rows = rows[page]
    compiler = rows.query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    slots: list[tuple[int, str]] = []
    for slot, sentinel in sentinels.items():
        found = [i for i, param in enumerate(params) if type(param) is type(sentinel) and param == sentinel]
        if len(found) != 1:
            raise RuntimeError(f"key page shape: {slot!r} compiled to {len(found)} parameters, not 1")
        slots.append((found[0], slot))
        if str(sentinel) in sql:
            raise RuntimeError(f"key page shape: {slot!r} is written into the SQL text")
    query = rows.query
    names = query.selected or (*query.extra_select, *query.values_select, *query.annotation_select)
    columns = tuple(column for column, _, _ in compiler.select[: compiler.col_count])
    if len(columns) != len(names):
        raise RuntimeError("key page shape: selected columns and names differ")
    return _CompiledPage(sql, tuple(params), tuple(slots), tuple(names), columns)


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
class KeyViewSet(PortalViewSet):
    """Keys and their lifecycle (SPEC §2)."""

    serializer_class = KeySerializer
    pagination_class = KeyPagination
    filterset_class = KeyFilter
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

    # Off only in tests, which compare the compiled pages with the ORM's.
    compiled_pages = True

    def list(self, request: Request) -> Response:
        # Rows, not instances: a page is built straight from the selected columns.
        applied = None
        if self.compiled_pages and getattr(request.user, "is_authenticated", False):
            # Validated as ``StrictFilterBackend`` validates (empty values refused, then the
            # FilterSet's form), with the form class built once; the shape's SQL is compiled once.
            data = StrictFilterBackend().get_filterset_kwargs(request, _ROWS, self)["data"]
            rules, form_class = _key_filter_rules()
            form = form_class(data, prefix=rules.form_prefix)
            if not form.is_valid():
                raise filter_utils.translate_validation(form.errors)
            applied = _cacheable_filters(rules, form.cleaned_data)
        if applied is None:
            rows: Any = self.filter_queryset(key_rows(request.user))
        else:
            rows = _PageRecorder(request, rules, applied)
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
        ok_response=PreparedKeySerializer,
    )
    @action(detail=True, methods=["post"], url_path="prepare-download")
    def prepare_download(self, request: Request, pk: str) -> Response:
        # The caller's role first, as in partial_update.
        services.authorize(actor=actor_from_request(request), key_id=pk, operation=Operation.PREPARE_DOWNLOAD)
        data = validated_body(PrepareDownloadSerializer, request)
        key = services.key_prepare_download(
            actor=actor_from_request(request), key_id=pk, public_key_pem=data["public_key"]
        )
        return Response(PreparedKeySerializer(key).data)

    @_action_schema(
        Operation.WITHDRAW_DOWNLOAD,
        "Withdraw a prepared download (its preparer or a keystore admin)",
        extra={
            403: OpenApiResponse(
                ErrorSerializer,
                description="`permission_denied`: only the person who prepared the download, or a keystore "
                "admin, may withdraw it.",
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="withdraw-download")
    def withdraw_download(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        key = services.key_withdraw_download(actor=actor_from_request(request), key_id=pk)
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
