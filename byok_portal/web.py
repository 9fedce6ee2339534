"""Shared helpers of the server-rendered pages.

Service functions raise; pages never show a traceback. Everything a service can
raise is turned here, in one place, into what a person reads: a message after an
action (success, no-op, refusal with its reason, AWS error with AWS's own code
and message) or errors next to the form fields they concern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseForbidden
from django.shortcuts import resolve_url
from django.template.loader import render_to_string

from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import NotFound, PermissionRefused, ServiceError

T = TypeVar("T")
ViewFunc = Callable[..., HttpResponseBase]

PAGE_SIZE = 25

# Set in the session by the OIDC login (accounts.oidc): the provider did the authentication.
SESSION_OIDC_LOGIN_KEY = "byok_oidc_login"


# --- the login gate: every app's pages sit behind it, so it lives in the kernel -------------


def session_is_verified(request: HttpRequest) -> bool:
    """Whether the request's session is fully logged in.

    OIDC sessions count as verified: the provider did the authentication, second
    factor included. Local sessions need a django-otp device verified at login.
    """
    user: Any = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if request.session.get(SESSION_OIDC_LOGIN_KEY):
        return True
    return bool(getattr(user, "is_verified", lambda: False)())


def portal_login_required(view: ViewFunc) -> ViewFunc:
    """Like ``login_required``, but a local login must also have passed TOTP."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if session_is_verified(request):
            return view(request, *args, **kwargs)
        return redirect_to_login(request.get_full_path(), resolve_url(settings.LOGIN_URL))

    return wrapper


class PortalLoginRequiredMixin:
    """:func:`portal_login_required` for class-based views."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not session_is_verified(request):
            return redirect_to_login(request.get_full_path(), resolve_url(settings.LOGIN_URL))
        response: HttpResponse = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        return response


# --- errors and forms ----------------------------------------------------------------------


def refusal_text(exc: ServiceError) -> str:
    """A refusal as a sentence: the service's reason, plus the states that would have allowed it."""
    text = exc.detail
    allowed = exc.extra.get("allowed_states")
    if allowed and "allowed in" not in text:
        text = f"{text} Allowed in: {', '.join(allowed)}."
    return text


def aws_error_text(exc: AwsError) -> str:
    """AWS's error, verbatim: which call, AWS's code and AWS's message."""
    return f"AWS error during {exc.operation}: {exc.code}: {exc.message}"


def report_error(request: HttpRequest, exc: Exception, *, doing: str) -> None:
    """Tell the user why ``doing`` (e.g. "Deactivate") did not happen (or not yet: it waits for approvals)."""
    if isinstance(exc, ApprovalPending):
        messages.info(request, f"{doing} waits for approval. {exc.detail}", extra_tags="approval")
    elif isinstance(exc, AwsError):
        messages.error(
            request,
            f"{doing} failed. {aws_error_text(exc)}. Nothing was lost: the portal state is unchanged and you can "
            "try again.",
            extra_tags="aws",
        )
    elif isinstance(exc, ServiceError):
        messages.error(request, f"{doing} refused. {refusal_text(exc)}", extra_tags="refused")
    elif isinstance(exc, ValidationError):
        messages.error(request, f"{doing} refused. {' '.join(exc.messages)}", extra_tags="refused")
    else:  # pragma: no cover - callers only pass the errors above
        raise exc


def apply_validation_error(form: forms.BaseForm, exc: ValidationError) -> None:
    """Put a service's ValidationError next to the fields it names (unknown fields become form-wide errors)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            target = field if field in form.fields else None
            for error in errors:
                form.add_error(target, error.messages)
    else:
        form.add_error(None, exc.messages)


@contextmanager
def service_errors_to_form(form: forms.BaseForm, request: HttpRequest, *, doing: str) -> Iterator[None]:
    """Run a service call for a form: field errors go to the form, refusals and AWS errors become messages.

    After the block, ``form.errors`` or a queued error message tells the caller it did not succeed.
    """
    try:
        yield
    except ValidationError as exc:
        apply_validation_error(form, exc)
    except (ServiceError, AwsError) as exc:
        report_error(request, exc, doing=doing)
        waits = isinstance(exc, ApprovalPending)
        form.add_error(None, f"{doing} {'waits for approval' if waits else 'did not happen'}; see the message above.")


def fetch_or_404(loader: Callable[[], T]) -> T:
    """Run a selector: unknown (or invisible) objects are a 404, too weak a role is handled by the caller."""
    try:
        return loader()
    except NotFound as exc:
        raise Http404(exc.detail) from exc


def forbidden(request: HttpRequest, exc: PermissionRefused) -> HttpResponse:
    """A 403 page that says which role is missing."""
    body = render_to_string("403.html", {"reason": exc.detail}, request=request)
    return HttpResponseForbidden(body)


def paginate(request: HttpRequest, queryset: Any, *, per_page: int = PAGE_SIZE) -> Page[Any]:
    """One page of ``queryset``; out-of-range and junk page numbers show the nearest real page."""
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters as a query string, for pagination links."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
