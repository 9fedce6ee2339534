"""Dual control pages: the approvals inbox, one request with its full content and decisions, the keystore's policy."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.identity import actor_from_request
from approvals import services
from approvals.filters import ApprovalFilter
from approvals.forms import ApprovalPolicyForm, RejectForm
from approvals.models import RequestState
from byok_portal.dual_control import ApprovalGroup
from byok_portal.errors import NotFound, PermissionRefused, ServiceError
from byok_portal.web import (
    apply_validation_error,
    fetch_or_404,
    forbidden,
    paginate,
    portal_login_required,
    query_without_page,
    report_error,
)
from keystores.models import Role
from keystores.selectors import get_keystore_for, role_in


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def inbox(request: HttpRequest) -> HttpResponse:
    """What waits for the viewer's approval first, then every request of their keystores (filterable)."""
    actor = actor_from_request(request)
    scoped = services.requests_for(request.user).prefetch_related("approvals").order_by("-created_at", "id")
    filterset = ApprovalFilter(request.GET, queryset=scoped)
    queryset = filterset.qs if filterset.is_valid() else scoped.none()
    context = {
        "awaiting": services.awaiting(request.user, actor.identity).select_related("keystore", "key")[:50],
        "filter": filterset,
        "page": paginate(request, queryset),
        "query": query_without_page(request),
    }
    return render(request, "approvals/inbox.html", context)


def _request_context(request: HttpRequest, approval: Any) -> dict[str, Any]:
    actor = actor_from_request(request)
    pending = approval.state == RequestState.PENDING
    mine = actor.identity == approval.requester
    approved_by_me = any((a.iss, a.sub) == actor.identity for a in approval.approvals.all())
    may = pending and not mine and services.may_approve(actor, approval)
    return {
        "approval": approval,
        "parameters": services.described(approval.parameters),
        "mine": mine,
        "approved_by_me": approved_by_me,
        "can_decide": may and not approved_by_me,
        "can_reject": may,
        "can_cancel": pending and mine,
        "can_end": approval.state == RequestState.APPROVED
        and not services.run_alive(approval)
        and services.may_end(actor, approval),
        "requester_active": approval.requester_active,
        "reject_form": RejectForm(),
    }


@portal_login_required
@never_cache
@require_http_methods(["GET"])
def detail(request: HttpRequest, request_id: str) -> HttpResponse:
    """The request's full content — who asked, what, on what, with which parameters, who approved — and decisions."""
    approval = fetch_or_404(lambda: services.get_request_for(request.user, request_id))
    return render(request, "approvals/detail.html", _request_context(request, approval))


def _decide(request: HttpRequest, request_id: str, doing: str, decide: Any, done: str) -> HttpResponse:
    try:
        decide(actor_from_request(request))
    except NotFound as exc:
        raise Http404(exc.detail) from exc
    except ServiceError as exc:
        report_error(request, exc, doing=doing)
    else:
        messages.success(request, done)
    return redirect("approvals:detail", request_id=request_id)


@portal_login_required
@require_POST
def approve(request: HttpRequest, request_id: str) -> HttpResponse:
    return _decide(
        request,
        request_id,
        "Approving",
        lambda actor: services.approve(actor=actor, request_id=request_id),
        "Approved. When enough people have approved, the operation runs in the background as its requester.",
    )


@portal_login_required
@require_POST
def reject(request: HttpRequest, request_id: str) -> HttpResponse:
    form = RejectForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    return _decide(
        request,
        request_id,
        "Rejecting",
        lambda actor: services.reject(actor=actor, request_id=request_id, reason=reason),
        "Rejected: the request has ended and the operation will not run.",
    )


@portal_login_required
@require_POST
def cancel(request: HttpRequest, request_id: str) -> HttpResponse:
    return _decide(
        request,
        request_id,
        "Cancelling",
        lambda actor: services.cancel(actor=actor, request_id=request_id),
        "Cancelled: the request has ended and the operation will not run.",
    )


@portal_login_required
@require_POST
def end(request: HttpRequest, request_id: str) -> HttpResponse:
    return _decide(
        request,
        request_id,
        "Ending the stalled request",
        lambda actor: services.end_stalled(actor=actor, request_id=request_id),
        "Ended: the request will not run; a run that starts later finds it ended.",
    )


@portal_login_required
@require_http_methods(["GET", "POST"])
def policy_edit(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Change the keystore's approval policy (admins); under the policy in force this may itself need approvals."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    if role_in(request.user, keystore) != Role.ADMIN:
        return forbidden(request, PermissionRefused(f"The approval policy needs the admin role in “{keystore.name}”."))
    policy = services.policy_of(keystore)
    initial = {name: getattr(policy, name) for name in (*services.POLICY_FIELDS, "approver_roles", "expires_hours")}
    form = ApprovalPolicyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        doing = "Changing the approval policy"
        try:
            services.policy_update(actor=actor_from_request(request), keystore_id=keystore.pk, values=form.cleaned_data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        except ServiceError as exc:  # a wait for approvals included: the message says which
            report_error(request, exc, doing=doing)
            return redirect(f"{reverse('keystores:detail', kwargs={'keystore_id': keystore.pk})}#approval-policy")
        else:
            messages.success(request, f"Approval policy of “{keystore.name}” saved.")
            return redirect(f"{reverse('keystores:detail', kwargs={'keystore_id': keystore.pk})}#approval-policy")
    context = {"form": form, "keystore": keystore, "groups": [g.value for g in ApprovalGroup]}
    return render(request, "approvals/policy.html", context, status=400 if form.errors else 200)
