"""Audit pages (SPEC §7): the events a user may read, filtered, newest first, with export links."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.decorators import portal_login_required
from audit.filters import AuditEventFilter
from audit.models import AuditEvent
from audit.selectors import events_for

PAGE_SIZE = 50


def _older_than(request: HttpRequest) -> int | None:
    value = request.GET.get("before", "")
    return int(value) if value.isdigit() else None


@portal_login_required
@require_GET
def event_list(request: HttpRequest) -> HttpResponse:
    """One page of events, and a link to the next older page.

    Pages are keyed by sequence number (``?before=<seq>``) rather than numbered,
    so the page at any depth costs one index range scan and no ``COUNT``.
    """
    filterset = AuditEventFilter(request.GET, queryset=events_for(request.user), request=request)
    events: list[AuditEvent] = []
    before = _older_than(request)
    if filterset.is_valid():
        queryset = filterset.qs.order_by("-seq")
        if before is not None:
            queryset = queryset.filter(seq__lt=before)
        events = list(queryset[: PAGE_SIZE + 1])
    older_query = None
    if len(events) > PAGE_SIZE:
        events = events[:PAGE_SIZE]
        params = request.GET.copy()
        params["before"] = str(events[-1].seq)
        older_query = params.urlencode()
    filter_params = request.GET.copy()
    filter_params.pop("before", None)
    return render(
        request,
        "audit/event_list.html",
        {
            "filter": filterset,
            "events": events,
            "older_query": older_query,
            "is_first_page": before is None,
            "filter_query": filter_params.urlencode(),
        },
    )
