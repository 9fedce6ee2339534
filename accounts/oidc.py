"""OpenID Connect login (mozilla-django-oidc), matching users by ``(iss, sub)``.

The library runs the authorization code flow (state, nonce and PKCE S256 stored in
the session, bounded by ``OIDC_TIMEOUT``); this module replaces the parts whose
defaults are wrong for a key-management product (NOTES.md):

- the ID token is verified by :func:`accounts.tokens.verify_id_token` (JWKS,
  pinned algorithm, ``iss``, ``aud``, ``exp``, nonce), not by the library's check,
  which skips audience and issuer;
- users are found and provisioned by ``(iss, sub)``, never by email;
- the ID token's ``(iss, sub)`` is kept in the session under
  :data:`accounts.identity.SESSION_IDENTITY_KEY` for the two-person rule, with a
  flag saying the session was authenticated by the provider (which counts as the
  second factor that local accounts get from TOTP).
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts.identity import SESSION_IDENTITY_KEY
from accounts.models import User
from accounts.services import update_user_from_claims, user_for_claims
from accounts.tokens import InvalidIDToken, verify_id_token
from byok_portal.web import SESSION_OIDC_LOGIN_KEY

logger = logging.getLogger(__name__)

# Request attribute carrying the verified (iss, sub) from the backend to the callback view.
_VERIFIED_IDENTITY_ATTR = "_byok_oidc_identity"


def oidc_enabled() -> bool:
    return bool(getattr(settings, "OIDC_ENABLED", False))


class PortalOIDCBackend(OIDCAuthenticationBackend):
    """Users are the ``(iss, sub)`` of their ID token, never their email."""

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        # Only the callback view passes the nonce it stored with the state. Any other
        # authenticate() call (the local login form, the admin) is not an OIDC login,
        # even if someone appends ?code=...&state=... to its URL.
        if request is None or not kwargs.get("nonce") or not oidc_enabled():
            return None
        try:
            user: User | None = super().authenticate(request, **kwargs)
        except requests.RequestException as exc:
            # The exception text may quote the provider's response; keep it out of logs.
            logger.warning("OIDC login failed: the provider could not be reached (%s)", type(exc).__name__)
            return None
        if user is not None:
            setattr(request, _VERIFIED_IDENTITY_ATTR, self._verified_identity)
        return user

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any] | None:
        """Full ID token verification; None (login refused) on any failure."""
        try:
            claims = verify_id_token(token, nonce=kwargs.get("nonce"))
        except InvalidIDToken as exc:
            logger.warning("OIDC login refused: %s", exc)
            return None
        self._verified_identity = (str(claims["iss"]), str(claims["sub"]))
        return claims

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The verified ID token's claims, completed with the userinfo endpoint's when there is one.

        ``iss``, ``sub`` and ``aud`` always come from the verified ID token; a userinfo
        response about another subject refuses the login (OIDC Core 5.3.2).
        """
        claims = dict(payload)
        if not self.OIDC_OP_USER_ENDPOINT:
            return claims
        try:
            userinfo = super().get_userinfo(access_token, id_token, payload)
        except requests.RequestException as exc:
            # Profile data is a convenience; the identity is in the verified ID token.
            logger.warning("OIDC userinfo unavailable (%s); using the ID token's claims", type(exc).__name__)
            return claims
        if not isinstance(userinfo, dict):
            return claims
        if str(userinfo.get("sub", "")) != claims["sub"]:
            raise SuspiciousOperation("The userinfo response is about another subject.")
        claims.update({k: v for k, v in userinfo.items() if k not in {"iss", "sub", "aud", "exp", "iat", "nonce"}})
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        # Email is optional: the account is keyed by (iss, sub) alone.
        return bool(claims.get("iss") and claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[User]:
        return User.objects.filter(
            oidc_issuer=str(claims["iss"]), oidc_subject=str(claims["sub"]), is_service_account=False
        )

    def create_user(self, claims: dict[str, Any]) -> User | None:
        return user_for_claims(claims, create=True)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        return update_user_from_claims(user, claims)


class PortalOIDCAuthenticationRequestView(OIDCAuthenticationRequestView):
    """Starts the code flow (state, nonce, PKCE); 404 when OIDC is not configured."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("OpenID Connect login is not configured.")
        response: HttpResponse = super().get(request)
        return response


class PortalOIDCCallbackView(OIDCAuthenticationCallbackView):
    """Completes the code flow and records the ID token's ``(iss, sub)`` in the session."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("OpenID Connect login is not configured.")
        response: HttpResponse = super().get(request)
        return response

    @property
    def failure_url(self) -> str:
        return reverse("login") + "?error=oidc"

    def login_success(self) -> HttpResponse:
        # super() may flush the session (another user was logged in) or cycle its
        # key, so the identity is written afterwards, into the session that survives.
        response: HttpResponse = super().login_success()
        iss, sub = getattr(self.request, _VERIFIED_IDENTITY_ATTR)
        self.request.session[SESSION_IDENTITY_KEY] = [iss, sub]
        self.request.session[SESSION_OIDC_LOGIN_KEY] = True
        return response
