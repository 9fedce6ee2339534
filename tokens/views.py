"""The API tokens page and the service accounts page (SPEC §13)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from accounts.identity import actor_from_request
from accounts.models import User
from accounts.services import create_service_account
from byok_portal.errors import NotFound, PermissionRefused
from byok_portal.web import fetch_or_404, forbidden, portal_login_required, report_error, service_errors_to_form
from keystores.selectors import is_superuser, keystores_for
from tokens import selectors, services
from tokens.forms import ServiceAccountForm, TokenCreateForm


def _created(request: HttpRequest, made: services.NewToken, back: str) -> HttpResponse:
    """The one page that shows the secret: not cached, not repeated (a reload shows a form again)."""
    response = render(request, "tokens/created.html", {"token": made.token, "secret": made.secret, "back": back})
    add_never_cache_headers(response)
    return response


def _create_token(request: HttpRequest, form: TokenCreateForm, owner: User) -> services.NewToken | None:
    made = None
    with service_errors_to_form(form, request, doing="Creating the token"):
        made = services.token_create(
            actor=actor_from_request(request),
            owner=owner,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            expires_in_days=form.cleaned_data["expires_in_days"],
            keystore_ids=[keystore.pk for keystore in form.cleaned_data["keystores"]],
        )
    return made


@portal_login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens (name, scope, keystores, expiry, last use) and a form for a new one."""
    user: Any = request.user
    form = TokenCreateForm(request.POST or None, keystores=keystores_for(user))
    if request.method == "POST" and form.is_valid():
        made = _create_token(request, form, user)
        if made is not None:
            return _created(request, made, back="tokens:list")
    context = {"form": form, "tokens": selectors.tokens_of(user)}
    return render(request, "tokens/list.html", context, status=400 if form.errors else 200)


@portal_login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: str) -> HttpResponse:
    try:
        token, _ = services.token_revoke(actor=actor_from_request(request), token_id=selectors.parse_token_id(token_id))
    except NotFound as exc:
        report_error(request, exc, doing="Revoking the token")
    else:
        messages.success(request, f"Token “{token.name}” revoked: it is refused from now on.")
    back = "tokens:service-accounts" if request.POST.get("back") == "service-accounts" else "tokens:list"
    return redirect(back)


@portal_login_required
@require_http_methods(["GET", "POST"])
def service_account_list(request: HttpRequest) -> HttpResponse:
    """Superusers: service accounts with their tokens, and a form for a new account."""
    if not is_superuser(request.user):
        return forbidden(request, PermissionRefused("Service accounts are managed by superusers."))
    form = ServiceAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with service_errors_to_form(form, request, doing="Creating the service account"):
            account = create_service_account(actor=actor_from_request(request), **form.cleaned_data)
        if not form.errors:
            messages.success(
                request,
                f"Service account “{account.get_username()}” created. Give it roles on the keystore pages, "
                "then make it a token.",
            )
            return redirect("tokens:service-accounts")
    context = {"form": form, "accounts": selectors.service_accounts(request.user)}
    return render(request, "tokens/service_accounts.html", context, status=400 if form.errors else 200)


@portal_login_required
@require_http_methods(["GET", "POST"])
def service_account_token(request: HttpRequest, user_id: int) -> HttpResponse:
    """Superusers: a new token for a service account (its secret shown once, to be put in the CI's secrets)."""
    if not is_superuser(request.user):
        return forbidden(request, PermissionRefused("Service accounts are managed by superusers."))
    account = fetch_or_404(lambda: selectors.service_account_for(request.user, user_id))
    form = TokenCreateForm(request.POST or None, keystores=keystores_for(account))
    if request.method == "POST" and form.is_valid():
        made = _create_token(request, form, account)
        if made is not None:
            return _created(request, made, back="tokens:service-accounts")
    context = {"form": form, "account": account}
    return render(request, "tokens/service_account_token.html", context, status=400 if form.errors else 200)
