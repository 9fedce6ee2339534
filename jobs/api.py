"""``/api/v1/jobs/`` (SPEC §16): start a bulk job, follow it, cancel it."""

from __future__ import annotations

import uuid
from typing import Any

from django.urls import URLPattern, URLResolver
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from accounts.identity import actor_from_request
from byok_portal.api import VALIDATION_ERROR, PortalViewSet, common_errors, id_parameter, invalid_state, validated_body
from byok_portal.errors import NotFound
from jobs import services
from jobs.models import Job
from jobs.serializers import JobCreateSerializer, JobSerializer, ResultsQuerySerializer


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("Job not found.") from None


class JobViewSet(PortalViewSet):
    """Bulk jobs of the caller (and those they may stop: see ``jobs.services.visible_jobs``)."""

    serializer_class = JobSerializer

    def get_queryset(self) -> Any:
        return services.visible_jobs(actor_from_request(self.request))

    def _job(self, pk: str) -> Job:
        job = self.get_queryset().filter(pk=_uuid(pk)).first()
        if job is None:
            raise NotFound("Job not found.")
        return job

    def _answer(self, pk: str, *, after: int = 0, limit: int = services.RESULTS_PAGE_SIZE) -> dict[str, Any]:
        job = self._job(pk)
        # The counts are read before the results: a key ending in between comes in both, never in neither.
        page = services.settled_results(job, after=after, limit=limit)
        return dict(JobSerializer(job, context={"results": page}).data)

    @extend_schema(
        summary="Start a bulk job",
        request=JobCreateSerializer,
        responses={201: JobSerializer, 400: VALIDATION_ERROR, **common_errors()},
    )
    def create(self, request: Request) -> Response:
        body = validated_body(JobCreateSerializer, request)
        job = services.job_create(
            actor=actor_from_request(request),
            request=services.JobRequest(
                operation=body["operation"],
                keys=body.get("keys"),
                filter=body.get("filter"),
                keystores=body.get("keystores"),
                names=body.get("names"),
                parameters=body.get("parameters") or {},
            ),
        )
        return Response(self._answer(str(job.pk)), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="A bulk job: its progress, and a page of per-key results in the order they ended",
        description=(
            "Poll with `?after=<next_after>` to get only the keys that ended since the last answer "
            "(and `limit=0` for the counts alone); `more_results` says another page is ready now."
        ),
        parameters=[id_parameter("job"), ResultsQuerySerializer],
        responses={200: JobSerializer, 400: VALIDATION_ERROR, **common_errors()},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        query = ResultsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(self._answer(pk, **query.validated_data))

    @extend_schema(
        summary="Cancel a bulk job (keys not yet started are left alone)",
        parameters=[id_parameter("job")],
        request=None,
        responses={200: JobSerializer, 409: invalid_state("`invalid_state`: the job is over."), **common_errors()},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        validated_body(None, request)
        services.job_cancel(actor=actor_from_request(request), job_id=_uuid(pk))
        return Response(self._answer(pk))


router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
