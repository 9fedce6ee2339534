"""API-wide glue shared by every endpoint: the error format of SPEC §6, its OpenAPI
components, throttles, pagination and the base serializer that refuses unknown fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.cache import add_never_cache_headers
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field, extend_schema_serializer
from rest_framework import exceptions, serializers, status, throttling, viewsets
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from byok_portal.aws import AwsError
from byok_portal.errors import ServiceError
from byok_portal.middleware import DATABASE_ERRORS
from byok_portal.parsers import StrictJSONParser
from byok_portal.unexpected import record_unexpected_error

# --- error bodies -------------------------------------------------------------------


def _validation_payload(exc: DjangoValidationError) -> Any:
    if hasattr(exc, "error_dict"):
        return {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return {"non_field_errors": list(exc.messages)}


def _with_allowed_states(body: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Every 409 of a key operation lists the states the operation is allowed in (SPEC §6).

    The services name them for lifecycle refusals; other conflicts of the same operation
    (e.g. a download with nothing prepared) get them from the view, which reads the lifecycle table.
    """
    allowed = getattr(context.get("view"), "allowed_states", None)
    if "allowed_states" not in body and allowed is not None:
        body = {**body, "allowed_states": list(allowed)}
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Errors as ``{"detail", "code", ...}``; field errors as DRF's field map (400)."""
    if isinstance(exc, ServiceError):
        body = exc.as_dict()
        if exc.status == status.HTTP_409_CONFLICT:
            body = _with_allowed_states(body, context)
        return Response(body, status=exc.status)
    if isinstance(exc, AwsError):
        return Response(
            {
                "detail": f"AWS refused {exc.operation}: {exc.code}: {exc.message}",
                "code": exc.kind,
                "aws_error_code": exc.code,
                "aws_error_message": exc.message,
                "aws_request_id": exc.request_id,
            },
            status=status.HTTP_502_BAD_GATEWAY,
        )
    if isinstance(exc, DjangoValidationError):
        return Response(_validation_payload(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DATABASE_ERRORS):
        return None  # re-raised for DatabaseUnavailableMiddleware: a 503 with Retry-After, not an error to audit
    response = drf_exception_handler(exc, context)
    if response is None:
        return _unexpected(exc, context)
    if isinstance(exc, exceptions.ValidationError):
        if not isinstance(response.data, dict):
            # DRF turns a bare `raise ValidationError("...")` into a list; keep field-map form.
            response.data = {"non_field_errors": response.data}
        return response
    if isinstance(exc, exceptions.APIException) and isinstance(response.data, dict):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        if isinstance(exc, exceptions.PermissionDenied):
            code = "permission_denied"
        elif isinstance(exc, exceptions.NotFound):
            code = "not_found"
        response.data = {"detail": str(response.data.get("detail", exc.detail)), "code": code}
    return response


def _unexpected(exc: Exception, context: dict[str, Any]) -> Response:
    """A clean, audited 500 for what nothing above knew (SPEC §6: never a bare 500)."""
    view = context.get("view")
    request = context["request"]
    operation = getattr(view, "lifecycle_operation", None)
    # Only the key endpoints name a lifecycle operation; their ``pk`` is a key id.
    key_id = getattr(view, "kwargs", {}).get("pk") if operation is not None or _is_key_view(view) else None
    request_id = record_unexpected_error(request._request, exc, operation=operation, key_id=key_id)
    body = {
        "detail": f"The portal failed unexpectedly. This was recorded (request {request_id}); nothing is shown here.",
        "code": "server_error",
        "request_id": request_id,
    }
    return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def _is_key_view(view: Any) -> bool:
    return hasattr(type(view), "lifecycle_operation")


# Named ``ApiError`` while audit.api still declares its own inline ``Error``; one
# component for both once audit imports this one.
@extend_schema_serializer(component_name="ApiError")
class ErrorSerializer(serializers.Serializer[Any]):
    """Every non-validation error: a human sentence and a machine code."""

    detail = serializers.CharField()
    code = serializers.CharField(help_text="Machine-readable code, e.g. `not_found`, `permission_denied`.")


@extend_schema_serializer(component_name="ServerError")
class ServerErrorSerializer(ErrorSerializer):
    """``500 server_error``: audited and logged; the answer says where to look, never what failed."""

    request_id = serializers.CharField(help_text="Finds the audit event and the server log entry.")


@extend_schema_serializer(component_name="InvalidStateError")
class InvalidStateErrorSerializer(ErrorSerializer):
    """``409 invalid_state``: the key (or keystore) is in a state that refuses the operation."""

    state = serializers.CharField(required=False, help_text="The state the resource is in.")
    allowed_states = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="States the operation is allowed in (present for every key operation).",
    )
    reason = serializers.CharField(required=False, help_text="e.g. `not_prepared`, `preparation_expired`.")
    live_keys = serializers.IntegerField(required=False, help_text="Keystore deletion: keys not yet DELETED.")


@extend_schema_field({"type": "string", "enum": ["kms_error", "aws_connection_error"]})
class AwsErrorCodeField(serializers.CharField):
    """An enum in the schema without a component of its own (a generic ``CodeEnum`` would say nothing)."""


@extend_schema_serializer(component_name="AwsError")
class AwsErrorSerializer(ErrorSerializer):
    """``502 kms_error`` / ``502 aws_connection_error``: AWS refused or could not be reached."""

    code = AwsErrorCodeField()
    aws_error_code = serializers.CharField(help_text="AWS's error code, verbatim.")
    aws_error_message = serializers.CharField(help_text="AWS's error message, verbatim.")
    aws_request_id = serializers.CharField(allow_null=True, help_text="AWS request id, when AWS answered.")


VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='Invalid input: DRF field errors, `{"<field>": ["<message>", ...]}` '
    "(unknown fields are named too; `non_field_errors` for the body as a whole).",
)
NOT_AUTHENTICATED = OpenApiResponse(ErrorSerializer, description="`not_authenticated` or `authentication_failed`.")
PERMISSION_DENIED = OpenApiResponse(
    ErrorSerializer, description="`permission_denied`: the caller's role in this keystore is too weak."
)
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description="`not_found`: no such object, or the caller is not a member of its keystore."
)
LIST_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="`not_found`: the `cursor` is not one this API issued.")
THROTTLED = OpenApiResponse(
    ErrorSerializer, description="`throttled`: too many requests; the `Retry-After` header says when to retry."
)


class ApprovalPendingSerializer(serializers.Serializer[Any]):
    """``202``: a covered operation waits for approvals instead of running (SPEC §12, §16)."""

    approval_request = serializers.DictField(help_text="The approval request, as `GET /api/v1/approvals/{id}/`.")
    detail = serializers.CharField()
    code = serializers.CharField(help_text="`approval_pending`.")


APPROVAL_PENDING = OpenApiResponse(
    ApprovalPendingSerializer,
    description="The keystore's approval policy covers this operation: an approval request was recorded "
    "(`approval_request`); the operation runs, as the caller, once enough other people approve.",
)
AWS_ERROR = OpenApiResponse(AwsErrorSerializer, description="AWS refused the call or could not be reached.")
HSM_ERROR = OpenApiResponse(
    ErrorSerializer,
    description="With `BYOK_CUSTODY=pkcs11`: `hsm_error` (the HSM could not be reached or refused) or "
    "`hsm_mechanism_missing` (the token lacks a mechanism, named in `detail`; nothing falls back to software).",
)
SERVER_ERROR = OpenApiResponse(
    ServerErrorSerializer,
    description="`server_error`: an unexpected failure. It is audited (outcome `failed`) and logged under the "
    "`request_id` given; the answer never carries its details.",
)


def id_parameter(what: str) -> OpenApiParameter:
    """The ``{id}`` of a detail path: a UUID (routes accept any segment so that others get a JSON 404)."""
    return OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description=f"The {what}'s ID.")


def invalid_state(description: str) -> OpenApiResponse:
    return OpenApiResponse(InvalidStateErrorSerializer, description=description)


def common_errors(*, auth_only: bool = False) -> dict[int, OpenApiResponse]:
    """401, 429 and 500 for every endpoint; 403 and 404 for object endpoints."""
    errors = {401: NOT_AUTHENTICATED, 429: THROTTLED, 500: SERVER_ERROR}
    if not auth_only:
        errors |= {403: PERMISSION_DENIED, 404: NOT_FOUND}
    return errors


# --- input ----------------------------------------------------------------------------


def _not_text(field: serializers.Field[Any, Any, Any, Any], value: Any) -> bool:
    """Whether a JSON value for a text field (or a list of them) is something other than text."""
    if isinstance(field, serializers.CharField):
        return value is not None and not isinstance(value, str)
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        return any(_not_text(field.child, item) for item in value)
    return False


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not know (or cannot set), naming them, instead of ignoring them, and
    numbers or booleans where the schema says text.

    A silently ignored field is how a typo (``expire`` for ``expires``) turns into a
    key with no expiry date that nobody notices. DRF's CharField would turn ``{"name": 1953}``
    into ``"1953"``: a client sending a number where text belongs has a bug worth hearing about.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name: field for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in data if name not in writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field: it cannot be set here."] for name in unknown})
            not_text = sorted(str(name) for name in data if _not_text(writable[name], data[name]))
            if not_text:
                raise serializers.ValidationError({name: ["Not a valid string."] for name in not_text})
        return super().to_internal_value(data)


class StrictSerializerScheme(OpenApiSerializerExtension):
    """Documents what :class:`StrictSerializer` enforces: no properties beyond the declared ones."""

    target_class = "byok_portal.api.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_basic_serializer(self.target, direction)
        return {**schema, "additionalProperties": False}


class EmptySerializer(StrictSerializer):
    """Actions without parameters: the body is empty or ``{}``."""


def validated_body(serializer_class: type[serializers.Serializer[Any]] | None, request: Request) -> dict[str, Any]:
    """The request body validated by ``serializer_class`` (none: only an empty body or ``{}`` is accepted)."""
    serializer = (serializer_class or EmptySerializer)(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- throttling and pagination ----------------------------------------------------------


class _LiveRates:
    """Read the rate table when a request comes in, not when DRF's module is imported.

    DRF binds ``THROTTLE_RATES`` at import time, so settings overrides (tests,
    per-deployment tuning through Django's settings machinery) would otherwise be ignored.
    """

    scope: str | None

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        return str(rates[self.scope]) if self.scope and rates.get(self.scope) else None


class UserThrottle(_LiveRates, throttling.UserRateThrottle):
    """Per user (per address when anonymous), every endpoint."""


class ScopedThrottle(_LiveRates, throttling.ScopedRateThrottle):
    """Per user and ``throttle_scope``: stricter rates for lifecycle operations and downloads."""


API_THROTTLES: list[type[throttling.BaseThrottle]] = [UserThrottle, ScopedThrottle]


class StrictFilterBackend(DjangoFilterBackend):
    """The shared FilterSets, with empty values refused as the schema says.

    On a page, an empty select means "any"; an API client sending ``?state=`` has a
    bug that silently widening the filter would hide.
    """

    def get_filterset_kwargs(self, request: Request, queryset: Any, view: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_filterset_kwargs(request, queryset, view)
        refuse_empty_filters(self.get_filterset_class(view, queryset), kwargs["data"])
        return kwargs


def refuse_empty_filters(filterset_class: Any, data: Any) -> None:
    """400 for ``?name=`` on any filter of ``filterset_class`` (see :class:`StrictFilterBackend`)."""
    refuse_empty_parameters(filterset_class.base_filters if filterset_class else (), data)


def refuse_empty_parameters(names: Iterable[str], data: Any) -> None:
    """400 for ``?name=`` on any of ``names``: a query parameter given empty is a client's bug, not "any"."""
    empty = sorted(name for name in set(names) if name in data and not data.get(name, "").strip())
    if empty:
        raise serializers.ValidationError({name: ["This filter may not be empty."] for name in empty})


class PortalViewSet(viewsets.GenericViewSet[Any]):
    """What every resource of the API shares: JSON in and out, strict filters, UUID lookups."""

    filter_backends = [StrictFilterBackend]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    # Any segment reaches the view, which answers a JSON 404 for what is not a UUID (the schema says uuid).
    lookup_value_regex = "[^/]+"

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # API answers carry key data (material wrapped for a download, KCVs, ARNs):
        # no browser or proxy cache may keep them.
        response = super().finalize_response(request, response, *args, **kwargs)
        add_never_cache_headers(response)
        return response


class FormatIsTheFile(DefaultContentNegotiation):
    """For file downloads: ``?format=`` names the file's format (CSV, PDF, JSON lines), not a DRF renderer,
    so the first renderer answers — errors are always JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class BoundedCursorPagination(CursorPagination):
    """Pages of at most 50 objects with opaque ``next``/``previous`` links.

    A cursor page is one index range scan however many rows precede it, which an
    offset page at row 90,000 is not.
    """

    page_size = 50


# --- OpenAPI ------------------------------------------------------------------------------


class BearerIDTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer <OIDC ID token>`` (SPEC §3)."""

    target_class = "accounts.authentication.BearerIDTokenAuthentication"
    name = "oidcIdToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An OpenID Connect ID token from the portal's provider (RS256, `aud` = client id, "
            "not an access token, lifetime and age bounded): see the introduction above.",
        }
