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
from jobs.serializers import JobCreateSerializer, JobSerializer


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("Job not found.") from None


class JobViewSet(PortalViewSet):
    """Bulk jobs of the caller."""

    serializer_class = JobSerializer

    def get_queryset(self) -> Any:
        return services.visible_jobs(actor_from_request(self.request)).prefetch_related("items")

    def _job(self, pk: str) -> Job:
        job = self.get_queryset().filter(pk=_uuid(pk)).first()
        if job is None:
            raise NotFound("Job not found.")
        return job

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
        return Response(JobSerializer(self._job(str(job.pk))).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="A bulk job, its progress and per-key results",
        parameters=[id_parameter("job")],
        responses={200: JobSerializer, **common_errors()},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(JobSerializer(self._job(pk)).data)

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
        return Response(JobSerializer(self._job(pk)).data)


router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
urlpatterns: list[URLPattern | URLResolver] = list(router.urls)
