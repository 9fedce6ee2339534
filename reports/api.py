"""``GET /api/v1/reports/{inventory|rotation-compliance|activity}/?format=csv|pdf`` (SPEC §16)."""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.urls import URLPattern, URLResolver, path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from byok_portal.api import VALIDATION_ERROR, ErrorSerializer, FormatIsTheFile, common_errors
from byok_portal.errors import NotFound
from reports import building, rendering


class ReportView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FormatIsTheFile

    @extend_schema(
        operation_id="reports_retrieve",
        summary="A report as CSV or PDF",
        description=(
            "`inventory`: every key you can see with spec, regions, state, KMS state, check value, material versions "
            "and age, expiry and last operation. `rotation-compliance`: live keys whose current material is older "
            "than their rotation policy (`rotation_period_days`) are `OVERDUE`; keys without a policy are not checked "
            "(`NO POLICY`). `activity`: audit events in `[since, until]` (default: the "
            "last 30 days) with who approved them. CSV is streamed; the audit head the report was built from is in "
            "the `X-BYOK-Audit-Head` header (`<seq>:<hash>`) and printed on every PDF page."
        ),
        parameters=[
            OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(building.KINDS)),
            OpenApiParameter("format", OpenApiTypes.STR, enum=list(building.FORMATS), default="csv"),
            OpenApiParameter("keystore", OpenApiTypes.UUID, description="Only this keystore."),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Activity from (date or date-time)."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Activity up to (date or date-time)."),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header row."),
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="PDF."),
            400: VALIDATION_ERROR,
            404: OpenApiResponse(ErrorSerializer, description="`not_found`: no report of that name."),
        }
        | common_errors(auth_only=True),
    )
    def get(self, request: Request, kind: str) -> StreamingHttpResponse | FileResponse:
        if kind not in building.KINDS:
            raise NotFound("No report of that name.")
        params = building.parse(request.user, kind, request.query_params, blank_is_absent=False)
        return rendering.response(building.build(request.user, params), params.format)


urlpatterns: list[URLPattern | URLResolver] = [
    # Any segment reaches the view, which answers a JSON 404 for a report that does not exist.
    path("reports/<str:kind>/", ReportView.as_view(), name="api-report"),
]
