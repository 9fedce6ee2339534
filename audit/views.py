"""Audit pages (SPEC §7): the events a user may read, filtered, newest first, with export links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.filters import AuditEventFilter
from audit.models import AuditEvent
from audit.selectors import events_for, filter_names
from byok_portal.filters import set_empty_label
from byok_portal.web import portal_login_required

PAGE_SIZE = 50
# Keys offered by name in the key filter (newest first); any other key can still be pasted by id.
KEY_SUGGESTIONS = 500
KEY_DATALIST_ID = "audit-key-names"


def offer_names(form: forms.Form, user: Any) -> list[Mapping[str, Any]]:
    """Let people filter by keystore and key name instead of raw UUIDs (the API keeps taking ids).

    The keystore filter becomes a list of the user's keystores; the key filter stays a text
    field (so a key beyond the suggestions can still be pasted) with a datalist of the user's
    keys, whose names and aliases the browser matches as one types. Returns the suggestions.
    """
    names = filter_names(user, KEY_SUGGESTIONS)
    keystore = form.fields["keystore"]
    keystore.label = "Keystore"
    keystore.widget = forms.Select(choices=[("", "All keystores"), *((str(pk), name) for pk, name in names.keystores)])
    key = form.fields["key"]
    key.label = "Key"
    key.help_text = "Start typing a key's name or alias, or paste its ID."
    key.widget.attrs.update({"list": KEY_DATALIST_ID, "autocomplete": "off", "spellcheck": "false"})
    set_empty_label(form.fields["operation"], "Any operation")
    set_empty_label(form.fields["outcome"], "Any outcome")
    return list(names.keys)


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
    key_names = offer_names(filterset.form, request.user)
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
            "key_names": key_names,
            "key_datalist_id": KEY_DATALIST_ID,
        },
    )
