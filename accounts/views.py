"""Login pages: OIDC button, local password + TOTP (enrolment on first login), logout.

A local login is two steps. The password step only *remembers* who is logging in
(``PENDING_LOGIN_KEY`` in the session, for a few minutes); the Django login happens
after the TOTP step. So a session never carries an authenticated user who has not
passed both factors, and nothing — not DRF's session authentication, not a page
that forgot a decorator — can act on a half-finished login.
"""

from __future__ import annotations

import math
import time
from base64 import b32encode
from typing import Any
from urllib.parse import quote, urlencode

import qrcode
import qrcode.image.svg
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.signals import user_login_failed
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.forms import LocalLoginForm, TOTPCodeForm
from accounts.identity import SESSION_IDENTITY_KEY, actor_from_request
from accounts.models import User
from accounts.oidc import oidc_enabled
from byok_portal.web import SESSION_OIDC_LOGIN_KEY, portal_login_required, session_is_verified

PENDING_LOGIN_KEY = "byok_pending_login"
# How long the TOTP step may follow the password step.
PENDING_LOGIN_SECONDS = 300
TOTP_DEVICE_NAME = "Authenticator app"
TOTP_ISSUER = "BYOK Portal"


def _local_login_enabled() -> bool:
    return bool(getattr(settings, "BYOK_LOCAL_LOGIN", False))


def _safe_next(request: HttpRequest, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()}, require_https=False):
        return value
    return ""


def _after_login_url(next_url: str) -> str:
    return next_url or resolve_url(settings.LOGIN_REDIRECT_URL)


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """The login page: the OIDC button and/or the local form (password step)."""
    local = _local_login_enabled()
    next_url = _safe_next(request, request.POST.get("next") or request.GET.get("next"))
    form = LocalLoginForm(request) if local else None
    if request.method == "POST":
        if not local:
            raise Http404("Local login is turned off.")
        form = LocalLoginForm(request, data=request.POST)
        # is_valid() calls authenticate(request=...), through django-axes, which
        # counts the failure or refuses a locked-out client.
        if form.is_valid():
            user = form.get_user()
            request.session.cycle_key()
            request.session[PENDING_LOGIN_KEY] = {
                "user_id": user.pk,
                "backend": getattr(user, "backend", ""),
                "since": time.time(),
                "next": next_url,
            }
            if TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
                return redirect("otp_verify")
            return redirect("otp_enrol")
    context = {
        "form": form,
        "oidc_enabled": oidc_enabled(),
        "local_enabled": local,
        "next": next_url,
        "oidc_failed": request.GET.get("error") == "oidc",
        "already_verified": session_is_verified(request),
    }
    return render(request, "accounts/login.html", context, status=400 if form is not None and form.errors else 200)


def _pending_user(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    pending = request.session.get(PENDING_LOGIN_KEY)
    if not isinstance(pending, dict) or time.time() - float(pending.get("since", 0)) > PENDING_LOGIN_SECONDS:
        request.session.pop(PENDING_LOGIN_KEY, None)
        return None
    user = User.objects.filter(pk=int(pending.get("user_id") or 0), is_active=True).first()
    return (user, pending) if user is not None else None


def _finish_login(request: HttpRequest, user: User, pending: dict[str, Any], device: TOTPDevice) -> HttpResponse:
    auth_login(request, user, backend=pending["backend"])
    otp_login(request, device)
    for key in (PENDING_LOGIN_KEY, SESSION_IDENTITY_KEY, SESSION_OIDC_LOGIN_KEY):
        request.session.pop(key, None)
    return HttpResponseRedirect(_after_login_url(pending.get("next", "")))


def _locked_out(request: HttpRequest, user: User) -> bool:
    """django-axes' verdict, so wrong TOTP codes share the password step's lockout."""
    credentials = {"username": user.get_username()}
    if AxesProxyHandler.is_locked(request, credentials=credentials):
        # AxesMiddleware turns this into its lockout response.
        request.axes_locked_out = True  # type: ignore[attr-defined]
        request.axes_credentials = credentials  # type: ignore[attr-defined]
        return True
    return False


def _code_accepted(request: HttpRequest, user: User, form: TOTPCodeForm, device: TOTPDevice) -> bool:
    """Check the form's code; on refusal, say why on the form and count it for django-axes.

    django-otp does not even check a code while the device is throttled (see
    ``OTP_TOTP_THROTTLE_FACTOR``); only then does the message speak of waiting, so a
    plain typo reads as a typo.
    """
    allowed, info = device.verify_is_allowed()
    if device.verify_token(form.cleaned_data["code"]):
        return True
    if not allowed and info and info.get("locked_until"):
        wait = max(1, math.ceil((info["locked_until"] - timezone.now()).total_seconds()))
        form.add_error("code", f"Too many wrong codes in a row. Wait {wait} s, then enter the current code.")
    else:
        form.add_error("code", "That code is not valid. Enter the current code from your authenticator app.")
    # Reported as a failed login, so django-axes counts wrong codes like wrong passwords.
    user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=request)
    return False


@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def otp_verify_view(request: HttpRequest) -> HttpResponse:
    """Second step for users with a confirmed TOTP device."""
    if not _local_login_enabled():
        raise Http404("Local login is turned off.")
    found = _pending_user(request)
    if found is None:
        return redirect("login")
    user, pending = found
    device = TOTPDevice.objects.devices_for_user(user, confirmed=True).first()
    if device is None:
        return redirect("otp_enrol")
    if _locked_out(request, user):
        return render(request, "accounts/otp_verify.html", {"form": TOTPCodeForm()}, status=429)
    form = TOTPCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _code_accepted(request, user, form, device):
        return _finish_login(request, user, pending, device)
    status = 400 if form.errors else 200
    return render(request, "accounts/otp_verify.html", {"form": form, "username": user.get_username()}, status=status)


def _qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code: drawn here, no external service sees the secret."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg: bytes = image.to_string(encoding="unicode")  # type: ignore[assignment]
    return str(svg)


def _otpauth_uri(device: TOTPDevice, username: str) -> str:
    label = f"{TOTP_ISSUER}:{username}"
    params = {
        "secret": b32encode(device.bin_key).decode().rstrip("="),
        "issuer": TOTP_ISSUER,
        "algorithm": "SHA1",
        "digits": device.digits,
        "period": device.step,
    }
    return f"otpauth://totp/{quote(label)}?{urlencode(params)}"


@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def otp_enrol_view(request: HttpRequest) -> HttpResponse:
    """First local login: set up an authenticator app, confirmed by one code."""
    if not _local_login_enabled():
        raise Http404("Local login is turned off.")
    found = _pending_user(request)
    if found is None:
        return redirect("login")
    user, pending = found
    if TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
        return redirect("otp_verify")
    if _locked_out(request, user):
        return render(request, "accounts/otp_verify.html", {"form": TOTPCodeForm()}, status=429)
    # One unconfirmed device per pending login, so reloading the page keeps the secret.
    device = TOTPDevice.objects.filter(user=user, confirmed=False, pk=pending.get("device_id")).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
        pending["device_id"] = device.pk
        request.session[PENDING_LOGIN_KEY] = pending
    form = TOTPCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _code_accepted(request, user, form, device):
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return _finish_login(request, user, pending, device)
    uri = _otpauth_uri(device, user.get_username())
    context = {
        "form": form,
        "username": user.get_username(),
        "qr_svg": _qr_svg(uri),
        "secret": b32encode(device.bin_key).decode().rstrip("="),
    }
    return render(request, "accounts/otp_enrol.html", context, status=400 if form.errors else 200)


@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks for confirmation (a link must not log anyone out); POST logs out.

    An OIDC session is also ended at the provider when it publishes an
    end-session endpoint (``OIDC_OP_LOGOUT_ENDPOINT``).
    """
    if request.method == "GET":
        return render(request, "accounts/logout.html")
    id_token = request.session.get("oidc_id_token")
    was_oidc = bool(request.session.get(SESSION_OIDC_LOGIN_KEY))
    auth_logout(request)
    login_url = request.build_absolute_uri(reverse("login"))
    end_session = getattr(settings, "OIDC_OP_LOGOUT_ENDPOINT", "")
    if was_oidc and end_session and id_token:
        params = {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": login_url,
            "client_id": settings.OIDC_RP_CLIENT_ID,
        }
        return HttpResponseRedirect(f"{end_session}?{urlencode(params)}")
    return redirect("login")


@portal_login_required
@require_http_methods(["GET"])
def account_view(request: HttpRequest) -> HttpResponse:
    """Who the portal thinks you are: account, identity for the two-person rule, roles."""
    actor = actor_from_request(request)
    user: Any = request.user
    # Through the reverse relation: accounts sits below keystores and does not import it.
    memberships = user.memberships.select_related("keystore").order_by("keystore__name")
    context = {
        "actor": actor,
        "via_oidc": bool(request.session.get(SESSION_OIDC_LOGIN_KEY)),
        "memberships": memberships,
        "can_create_keystores": user.has_perm("keystores.add_keystore"),
    }
    return render(request, "accounts/account.html", context)
