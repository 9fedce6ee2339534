"""REST endpoints of the audit trail (SPEC §6): list, streamed export, chain verification and head.

Everything is read-only and starts from :mod:`audit.selectors`, so the API shows
exactly what the audit pages show.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from audit import chain, export
from audit.filters import AuditEventFilter
from audit.models import AuditEvent
from audit.selectors import can_check_chain, events_for
from audit.serializers import AuditEventSerializer, ChainHeadSerializer, VerificationSerializer
from byok_portal.api import FormatIsTheFile, StrictFilterBackend, refuse_empty_filters
from byok_portal.vocabulary import Operation

ERROR = inline_serializer(
    "Error",
    fields={"detail": serializers.CharField(), "code": serializers.CharField()},
)
NOT_AUTHENTICATED = OpenApiResponse(ERROR, description="Not authenticated (`not_authenticated`).")
NO_AUDIT_ROLE = OpenApiResponse(
    ERROR, description="`permission_denied`: the caller holds no role in any keystore and is not a superuser."
)
THROTTLED = OpenApiResponse(ERROR, description="`throttled`: too many requests.")
BAD_FILTER = OpenApiResponse(
    OpenApiTypes.OBJECT, description='A filter value is invalid: DRF field errors, e.g. `{"since": ["..."]}`.'
)
HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class AuditCursorPagination(CursorPagination):
    """Newest first by ``seq``: each page is one index range scan, however long the trail."""

    ordering = "-seq"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Any) -> int:
        """DRF silently falls back to the default on a bad ``page_size``; a client deserves to hear it."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise serializers.ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw)


class AuditEventList(generics.ListAPIView[AuditEvent]):
    """Audit events of the keystores the caller holds a role in (superusers: all), newest first."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    filter_backends = [StrictFilterBackend]
    pagination_class = AuditCursorPagination

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return events_for(self.request.user)

    @extend_schema(
        operation_id="audit_events_list",
        summary="List audit events",
        responses={
            200: AuditEventSerializer(many=True),
            400: BAD_FILTER,
            401: NOT_AUTHENTICATED,
            404: OpenApiResponse(ERROR, description="`not_found`: the `cursor` is not one this endpoint gave out."),
            429: THROTTLED,
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


_FILTER_PARAMETERS = [
    OpenApiParameter("keystore", OpenApiTypes.UUID, description="Keystore ID."),
    OpenApiParameter("key", OpenApiTypes.UUID, description="Key ID."),
    OpenApiParameter("actor", OpenApiTypes.STR, description="OIDC subject or display name, exactly."),
    OpenApiParameter("operation", OpenApiTypes.STR, enum=[op.value for op in Operation]),
    OpenApiParameter("outcome", OpenApiTypes.STR, enum=["success", "noop", "refused", "failed"]),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="From this instant, inclusive."),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Up to this instant, inclusive."),
]


class AuditEventExport(APIView):
    """The filtered events as a streamed file, oldest first, in constant memory."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = FormatIsTheFile

    @extend_schema(
        operation_id="audit_events_export",
        summary="Export audit events (streamed)",
        description=(
            "Same filters and visibility as the list. `jsonl`: one event per line in the list's shape; "
            "`csv`: one flat row per event (lists and dicts as JSON; cells that a spreadsheet would run as a "
            "formula are prefixed with `'`). Events are in `seq` order, up to the newest one when the export started."
        ),
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(export.FORMATS), default="jsonl"),
            *_FILTER_PARAMETERS,
        ],
        responses={
            (200, "application/jsonl"): OpenApiResponse(OpenApiTypes.STR, description="JSON Lines."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header row."),
            400: BAD_FILTER,
            401: NOT_AUTHENTICATED,
            429: THROTTLED,
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        kind = request.query_params.get("format", "jsonl")
        if kind not in export.FORMATS:
            raise exceptions.ValidationError({"format": [f"Choose one of: {', '.join(export.FORMATS)}."]})
        refuse_empty_filters(AuditEventFilter, request.query_params)
        filterset = AuditEventFilter(request.query_params, queryset=events_for(request.user), request=request)
        if not filterset.is_valid():
            raise exceptions.ValidationError(filterset.errors)
        body = export.jsonl(filterset.qs) if kind == "jsonl" else export.csv_lines(filterset.qs)
        response = StreamingHttpResponse(body, content_type=export.FORMATS[kind])
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-events-{stamp}.{kind}"'
        response["Cache-Control"] = "no-store"
        return response


class VerifyThrottle(UserRateThrottle):
    """Verification reads the whole trail: a few runs a minute per user are plenty."""

    scope = "audit_verify"
    rate = "10/min"


def _require_chain_access(request: Request) -> None:
    if not can_check_chain(request.user):
        raise exceptions.PermissionDenied("Verifying the audit trail needs a role in at least one keystore.")


class AuditVerify(APIView):
    """Walk the whole hash chain and report the first bad event.

    Allowed to superusers and to anyone holding a role (auditor or above) in some
    keystore: the answer covers every event but shows no event's content.
    """

    throttle_classes = [VerifyThrottle]

    @extend_schema(
        operation_id="audit_verify",
        summary="Verify the audit hash chain",
        parameters=[
            OpenApiParameter("expect_seq", OpenApiTypes.INT, description="Sequence number of a published head."),
            OpenApiParameter("expect_hash", OpenApiTypes.STR, description="Hash of that published head (64 hex)."),
        ],
        responses={
            200: VerificationSerializer,
            400: BAD_FILTER,
            401: NOT_AUTHENTICATED,
            403: NO_AUDIT_ROLE,
            429: THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        _require_chain_access(request)
        expected = _expected_head(request)
        result = chain.verify(expected_head=expected)
        return Response(
            VerificationSerializer(
                {
                    "ok": result.ok,
                    "events": result.events,
                    "first_bad": result.first_bad,
                    "problem": result.problem,
                    "head": {"seq": result.head_seq, "hash": result.head_hash},
                }
            ).data
        )


def _expected_head(request: Request) -> tuple[int, str] | None:
    """The published head to check against, from ``expect_seq`` and ``expect_hash`` (both or neither)."""
    seq, digest = request.query_params.get("expect_seq"), request.query_params.get("expect_hash")
    if seq is None and digest is None:
        return None
    if seq is not None and seq.isdigit() and digest is not None and HASH_RE.match(digest):
        return int(seq), digest
    errors: dict[str, list[str]] = {}
    if seq is None or not seq.isdigit():
        errors["expect_seq"] = ["A sequence number (a non-negative integer) is required with expect_hash."]
    if digest is None or not HASH_RE.match(digest):
        errors["expect_hash"] = ["A hash (64 lower-case hex digits) is required with expect_seq."]
    raise exceptions.ValidationError(errors)


class AuditHeadView(APIView):
    """The current ``(seq, hash)`` of the chain, to publish outside the portal (same access as verify)."""

    @extend_schema(
        operation_id="audit_head",
        summary="Current head of the audit hash chain",
        responses={200: ChainHeadSerializer, 401: NOT_AUTHENTICATED, 403: NO_AUDIT_ROLE, 429: THROTTLED},
    )
    def get(self, request: Request) -> Response:
        _require_chain_access(request)
        seq, digest = chain.current_head()
        return Response(ChainHeadSerializer({"seq": seq, "hash": digest}).data)


urlpatterns: list[URLPattern | URLResolver] = [
    path("audit/events/", AuditEventList.as_view(), name="audit-event-list"),
    path("audit/events/export/", AuditEventExport.as_view(), name="audit-event-export"),
    path("audit/verify/", AuditVerify.as_view(), name="audit-verify"),
    path("audit/head/", AuditHeadView.as_view(), name="audit-head"),
]
