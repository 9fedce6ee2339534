"""Notification pages: a keystore's webhooks with their delivery log, and each person's email preferences."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.identity import actor_from_request
from accounts.models import User
from byok_portal.errors import PermissionRefused, ServiceError
from byok_portal.web import fetch_or_404, forbidden, portal_login_required, report_error
from keystores.models import Role
from keystores.selectors import get_keystore_for, keystores_for
from notifications import services
from notifications.events import LABELS, SUBSCRIBABLE


@portal_login_required
@never_cache
@require_http_methods(["GET", "POST"])
def webhooks(request: HttpRequest, keystore_id: uuid.UUID) -> HttpResponse:
    """Keystore admins: add, remove and test webhooks; the delivery log with each attempt's status code."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    try:
        get_keystore_for(request.user, keystore_id, role=Role.ADMIN)
    except PermissionRefused as exc:
        return forbidden(request, exc)
    context: dict[str, object] = {"keystore": keystore, "event_types": [(str(k), LABELS[k]) for k in SUBSCRIBABLE]}
    if request.method == "POST":
        actor = actor_from_request(request)
        action = request.POST.get("action")
        try:
            if action == "create":
                created = services.webhook_create(
                    actor=actor,
                    keystore_id=keystore.pk,
                    url=request.POST.get("url", ""),
                    events=request.POST.getlist("events"),
                )
                # Shown once, on this response only: the page never shows it again.
                context["new_secret"] = created.secret
                context["new_webhook"] = created.webhook
                messages.success(request, "Webhook added. Copy its signing secret now: it is not shown again.")
            elif action == "delete":
                services.webhook_delete(actor=actor, keystore_id=keystore.pk, webhook_id=request.POST.get("webhook"))
                messages.success(request, "Webhook removed.")
                return redirect("notifications:webhooks", keystore_id=keystore.pk)
            elif action == "test":
                services.webhook_send_test(actor=actor, keystore_id=keystore.pk, webhook_id=request.POST.get("webhook"))
                messages.success(request, "Test event queued: its delivery shows in the log below.")
                return redirect("notifications:webhooks", keystore_id=keystore.pk)
        except ValidationError as exc:
            context["errors"] = exc.message_dict
            context["url"] = request.POST.get("url", "")
        except ServiceError as exc:  # refusals and not-found: the shared wording, as on every page
            report_error(request, exc, doing="Changing the webhooks")
            return redirect("notifications:webhooks", keystore_id=keystore.pk)
    context["webhooks"] = services.webhooks_of(keystore)
    context["deliveries"] = services.recent_deliveries(keystore)
    return render(request, "notifications/webhooks.html", context)


@portal_login_required
@never_cache
@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    """Which events each keystore emails you (default: all of them)."""
    user = request.user
    assert isinstance(user, User)
    keystores = list(keystores_for(user).order_by("name", "id"))
    if request.method == "POST":
        for keystore in keystores:
            services.set_email_preference(
                user=user, keystore=keystore, wanted=request.POST.getlist(f"events-{keystore.pk}")
            )
        messages.success(request, "Email preferences saved.")
        return redirect("notifications:preferences")
    muted = services.email_preferences(user, keystores)
    rows = [
        (keystore, [(str(k), LABELS[k], str(k) not in muted.get(keystore.pk, [])) for k in SUBSCRIBABLE])
        for keystore in keystores
    ]
    return render(request, "notifications/preferences.html", {"rows": rows, "email": user.email})
