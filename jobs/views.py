"""Bulk job pages: start one from the key list (its selection or its filters), follow it, cancel it."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.identity import actor_from_request
from byok_portal.aws import AwsError
from byok_portal.errors import NotFound, ServiceError
from byok_portal.web import fetch_or_404, portal_login_required, report_error
from jobs import services
from jobs.models import FINISHED_JOB_STATES, Job
from keys.filters import KeyFilter

FILTER_PREFIX = "filter_"
ROWS_PER_PAGE = 500


@portal_login_required
@require_http_methods(["POST"])
def job_start(request: HttpRequest) -> HttpResponse:
    """The key list's bulk form: the operation over the selected keys, or over every key its filters match."""
    if request.POST.get("scope") == "filter":
        fields = set(KeyFilter.base_filters)
        chosen = {
            name.removeprefix(FILTER_PREFIX): value
            for name, value in request.POST.items()
            if name.startswith(FILTER_PREFIX) and name.removeprefix(FILTER_PREFIX) in fields and value
        }
        selection = services.JobRequest(operation=request.POST.get("operation", ""), filter=chosen)
    else:
        keys: list[uuid.UUID] = []
        for value in request.POST.getlist("keys"):
            try:
                keys.append(uuid.UUID(value))
            except ValueError:
                continue
        selection = services.JobRequest(operation=request.POST.get("operation", ""), keys=keys)
    try:
        job = services.job_create(actor=actor_from_request(request), request=selection)
    except (ValidationError, ServiceError, AwsError) as exc:
        report_error(request, exc, doing="The bulk action")
        return redirect(reverse("keys:list"))
    messages.success(request, f"Bulk job started: {job.total} keys.")
    return redirect("jobs:detail", job_id=job.pk)


def _job(request: HttpRequest, job_id: uuid.UUID) -> Job:
    def load() -> Job:
        job = services.visible_jobs(actor_from_request(request)).filter(pk=job_id).first()
        if job is None:
            raise NotFound("Job not found.")
        return job

    return fetch_or_404(load)


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """Progress (polled by static/js/job-progress.js from the API), the quota's ETA and each key's outcome."""
    job = _job(request, job_id)
    # Rows by position, a page at a time: a 10,000-key job is not one 3 MB page. Positions are 0…total-1.
    try:
        start = max(0, min(int(request.GET.get("from", 0)), job.total - 1))
    except ValueError:
        start = 0
    start -= start % ROWS_PER_PAGE
    # The job's counts are read before its items: the poll goes on from ``job.settled``, so a key that
    # ends in between is shown twice (harmlessly), never missed.
    items = job.items.filter(position__gte=start, position__lt=start + ROWS_PER_PAGE).select_related("approval_request")
    context = {
        "job": job,
        "items": items,
        "eta": services.eta_seconds(job),
        "approvals": services.approval_states(job),
        "finished": job.state in FINISHED_JOB_STATES,
        "settled": job.settled,
        "rows": (start + 1, min(start + ROWS_PER_PAGE, job.total)),
        "previous_rows": start - ROWS_PER_PAGE if start else None,
        "next_rows": start + ROWS_PER_PAGE if start + ROWS_PER_PAGE < job.total else None,
    }
    return render(request, "jobs/detail.html", context)


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def job_list(request: HttpRequest) -> HttpResponse:
    """The person's bulk jobs, and those of others they may stop (admins, superusers), newest first."""
    jobs = services.visible_jobs(actor_from_request(request))[:100]
    return render(request, "jobs/list.html", {"jobs": jobs})


@portal_login_required
@require_http_methods(["POST"])
def job_cancel(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    try:
        services.job_cancel(actor=actor_from_request(request), job_id=job_id)
    except NotFound:
        _job(request, job_id)  # answers 404
    except ServiceError as exc:
        report_error(request, exc, doing="Cancelling the job")
    else:
        messages.success(request, "Job cancelled: keys not yet started are left as they were.")
    return redirect("jobs:detail", job_id=job_id)
