"""Access to pages: logged in, and with a second factor for local accounts."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url

from accounts.oidc import SESSION_OIDC_LOGIN_KEY

ViewFunc = Callable[..., HttpResponse]


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
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
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
