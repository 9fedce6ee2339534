"""Keystore pages: list, create, detail with the IAM setup guide and connection test, members, edit, delete.

Every page starts from the scoped selectors; every change is a service call
(:mod:`keystores.services`), whose refusals and AWS errors become messages
through :mod:`byok_portal.web`.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.identity import actor_from_request
from byok_portal import aws
from byok_portal.errors import NotFound, PermissionRefused, ServiceError
from byok_portal.vocabulary import KeyState
from byok_portal.web import (
    fetch_or_404,
    forbidden,
    paginate,
    portal_login_required,
    query_without_page,
    report_error,
    service_errors_to_form,
)
from keystores import sandbox, services
from keystores.filters import KeystoreFilter
from keystores.forms import KeystoreCreateForm, KeystoreEditForm, MemberForm
from keystores.models import ROLE_RANK, Keystore, KeystoreState, Membership, Role
from keystores.selectors import (
    can_create_keystores,
    get_keystore_for,
    keystores_for,
    members_of,
    role_in,
    with_key_counts,
)

DELETE_CONSEQUENCE = (
    "The keystore becomes DELETED: no keys can be created or changed in it any more. It and its audit trail stay "
    "readable. The IAM role in AWS is left alone; remove it there when you no longer need it."
)


def _with_role(queryset: Any, user: Any) -> Any:
    """Annotate the user's own role in each keystore (superusers without a membership act as admins)."""
    mine = Membership.objects.filter(keystore=OuterRef("pk"), user=user).values("role")[:1]
    return queryset.annotate(my_role=Subquery(mine))


@portal_login_required
@require_http_methods(["GET"])
def keystore_list(request: HttpRequest) -> HttpResponse:
    """Keystores the user belongs to, with key counts, connection status and their role.

    Filtering is the shared :class:`keystores.filters.KeystoreFilter` (the same as the API's);
    deleted keystores only show when asked for.
    """
    scoped = keystores_for(request.user)
    filterset = KeystoreFilter(request.GET, queryset=scoped)
    # django-filter's choice fields read their empty label lazily.
    filterset.form.fields["state"].empty_label = "Active"
    filterset.form.fields["region"].empty_label = "All regions"
    queryset = filterset.qs if filterset.is_valid() else scoped.none()
    if not request.GET.get("state"):
        queryset = queryset.filter(state=KeystoreState.ACTIVE)
    queryset = _with_role(with_key_counts(queryset), request.user).order_by("name", "id")
    context = {
        "filter": filterset,
        "page": paginate(request, queryset),
        "query": query_without_page(request),
        "can_create": can_create_keystores(request.user),
    }
    return render(request, "keystores/list.html", context)


@portal_login_required
@require_http_methods(["GET", "POST"])
def keystore_create(request: HttpRequest) -> HttpResponse:
    """Create a keystore; the next page is its IAM setup guide."""
    if not can_create_keystores(request.user):
        return forbidden(request, PermissionRefused("Creating keystores needs the keystore creator permission."))
    # In sandbox mode the form starts with values that work there (see keystores.sandbox).
    form = KeystoreCreateForm(request.POST or None, initial=sandbox.suggested_keystore() if sandbox.enabled() else None)
    if request.method == "POST" and form.is_valid():
        with service_errors_to_form(form, request, doing="Creating the keystore"):
            keystore = services.keystore_create(actor=actor_from_request(request), **form.cleaned_data)
        if not form.errors:
            messages.success(
                request,
                f"Keystore “{keystore.name}” created. Next: set up the IAM role in AWS account "
                f"{keystore.aws_account_id} with the policies below, then test the connection.",
            )
            return redirect("keystores:detail", keystore_id=keystore.pk)
    status = 400 if form.errors else 200
    return render(request, "keystores/create.html", {"form": form, "sandbox": sandbox.enabled()}, status=status)


def _pretty(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


@portal_login_required
@require_http_methods(["GET"])
def keystore_detail(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Connection status, the IAM setup guide, key counts by state and the members."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    role = role_in(request.user, keystore)
    policies = services.iam_policies(keystore)
    counts = dict(keystore.keys.values_list("state").annotate(n=Count("id")).order_by())
    states = [(state, counts.get(state.value, 0)) for state in KeyState]
    rank = ROLE_RANK[role] if role else 0
    context = {
        "keystore": keystore,
        "role": role,
        "is_admin": rank >= ROLE_RANK[Role.ADMIN],
        "is_custodian": rank >= ROLE_RANK[Role.CUSTODIAN],
        "trust_policy": _pretty(policies["trust_policy"]),
        "replica_regions": services.replica_regions_in_use(keystore),
        "permissions_policy": _pretty(policies["permissions_policy"]),
        "portal_principal": aws.portal_principal_arn(),
        "role_name": keystore.role_arn.split(":role/", 1)[-1],
        "states": states,
        "live_keys": sum(n for state, n in states if state != KeyState.DELETED),
        "members": members_of(keystore),
        "member_form": MemberForm(),
        "delete_consequence": DELETE_CONSEQUENCE,
        "sandbox": sandbox.enabled(),
    }
    return render(request, "keystores/detail.html", context)


@portal_login_required
@require_http_methods(["GET", "POST"])
def keystore_edit(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Edit name, role ARN, automatic re-upload and the default rotation policy of new keys (admins)."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    if role_in(request.user, keystore) != Role.ADMIN:
        return forbidden(request, PermissionRefused(f"Editing needs the admin role in keystore “{keystore.name}”."))
    initial = {
        "name": keystore.name,
        "role_arn": keystore.role_arn,
        "auto_reupload": keystore.auto_reupload,
        "rotation_period_days": keystore.rotation_period_days,
        "rotation_on_limit": keystore.rotation_on_limit,
        "material_valid_days": keystore.material_valid_days,
    }
    form = KeystoreEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        changes = {field: value for field, value in form.cleaned_data.items() if initial[field] != value}
        if not changes:
            messages.info(request, "Nothing to change — the keystore is as you left it.")
            return redirect("keystores:detail", keystore_id=keystore.pk)
        with service_errors_to_form(form, request, doing="Saving the keystore"):
            keystore = services.keystore_update(actor=actor_from_request(request), keystore_id=keystore.pk, **changes)
        if not form.errors:
            messages.success(request, f"Keystore “{keystore.name}” saved ({', '.join(sorted(changes))} changed).")
            return redirect("keystores:detail", keystore_id=keystore.pk)
    context = {"form": form, "keystore": keystore}
    return render(request, "keystores/edit.html", context, status=400 if form.errors else 200)


@portal_login_required
@require_POST
def keystore_test_connection(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Assume the role and make one harmless KMS call; show AWS's answer verbatim."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    try:
        keystore = services.keystore_test_connection(actor=actor_from_request(request), keystore_id=keystore.pk)
    except (ServiceError, aws.AwsError) as exc:
        report_error(request, exc, doing="Testing the connection")
    else:
        if keystore.last_check_ok:
            messages.success(request, "Connection OK: the portal assumed the role and KMS answered.")
        else:
            messages.error(request, f"Connection failed. {keystore.last_check_error}", extra_tags="aws")
    return redirect(f"{keystore_url(keystore)}#connection")


@portal_login_required
@require_POST
def keystore_sandbox_create_role(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Sandbox mode only: create the keystore's role there, with the generated policies (admins)."""
    if not sandbox.enabled():
        raise Http404("Roles are created in AWS, with your own credentials.")
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    if role_in(request.user, keystore) != Role.ADMIN or keystore.is_deleted:
        return forbidden(request, PermissionRefused(f"Setting up the role needs the admin role in “{keystore.name}”."))
    try:
        sandbox.create_role(keystore)
    except aws.AwsError as exc:
        report_error(request, exc, doing="Creating the role in the sandbox")
    else:
        messages.success(
            request,
            f"Role {keystore.role_arn} created in the sandbox with the trust and permissions policies of the IAM "
            "setup guide. Test the connection now.",
        )
    return redirect(f"{keystore_url(keystore)}#connection")


def keystore_url(keystore: Keystore) -> str:
    return reverse("keystores:detail", kwargs={"keystore_id": keystore.pk})


@portal_login_required
@require_http_methods(["GET", "POST"])
def keystore_delete(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """GET: confirmation page (also the no-JS fallback of the dialog). POST: soft-delete."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    if request.method == "GET":
        live = keystore.keys.exclude(state=KeyState.DELETED).count()
        context = {"keystore": keystore, "live_keys": live, "delete_consequence": DELETE_CONSEQUENCE}
        return render(request, "keystores/delete.html", context)
    try:
        services.keystore_delete(actor=actor_from_request(request), keystore_id=keystore.pk)
    except ServiceError as exc:
        report_error(request, exc, doing="Deleting the keystore")
        return redirect("keystores:detail", keystore_id=keystore.pk)
    if keystore.state == KeystoreState.DELETED:
        messages.info(request, f"Keystore “{keystore.name}” was already deleted — nothing changed.")
    else:
        messages.success(request, f"Keystore “{keystore.name}” deleted. It and its audit trail stay readable.")
    return redirect("keystores:detail", keystore_id=keystore.pk)


@portal_login_required
@require_POST
def member_set(request: HttpRequest, keystore_id: str) -> HttpResponse:
    """Add a member or change a member's role (admins).

    A named person goes straight to the service, which checks the caller's role
    before the name and audits every refusal, an outsider's included (then a 404,
    as for a keystore that does not exist).
    """
    form = MemberForm(request.POST)
    if not form.is_valid():
        keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else "Member"
            for error in errors:
                messages.error(request, f"{label}: {error}", extra_tags="refused")
        return redirect(f"{keystore_url(keystore)}#members")
    role = Role(form.cleaned_data["role"])
    try:
        membership = services.membership_grant(
            actor=actor_from_request(request), keystore_id=keystore_id, reference=form.cleaned_data["user"], role=role
        )
    except NotFound as exc:
        raise Http404(exc.detail) from exc
    except ServiceError as exc:
        report_error(request, exc, doing="Changing the members")
    else:
        name = membership.user.display_name
        messages.success(request, f"{name} is now {role.label.lower()} of “{membership.keystore.name}”.")
    return redirect(reverse("keystores:detail", kwargs={"keystore_id": keystore_id}) + "#members")


@portal_login_required
@require_http_methods(["GET", "POST"])
def member_remove(request: HttpRequest, keystore_id: str, user_id: int) -> HttpResponse:
    """GET: confirmation page. POST: remove the member (admins; never the last admin)."""
    keystore = fetch_or_404(lambda: get_keystore_for(request.user, keystore_id))
    membership = fetch_or_404(lambda: _membership(keystore, user_id))
    if request.method == "GET":
        consequence = (
            f"{membership.user.display_name} loses the {membership.get_role_display().lower()} role at once: they no "
            "longer see this keystore, its keys or its audit trail. The last admin cannot be removed."
        )
        context = {"keystore": keystore, "membership": membership, "remove_consequence": consequence}
        return render(request, "keystores/member_remove.html", context)
    try:
        services.membership_remove(actor=actor_from_request(request), keystore_id=keystore.pk, user=membership.user)
    except ServiceError as exc:
        report_error(request, exc, doing="Removing the member")
    else:
        messages.success(request, f"{membership.user.display_name} no longer has a role in “{keystore.name}”.")
    return redirect(f"{keystore_url(keystore)}#members")


def _membership(keystore: Keystore, user_id: int) -> Membership:
    membership = members_of(keystore).filter(user_id=user_id).first()
    if membership is None:
        raise NotFound("That user is not a member of this keystore.")
    return membership
