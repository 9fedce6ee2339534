"""OpenID Connect login glue (mozilla-django-oidc), matching users by ``(iss, sub)``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from accounts.models import User


class PortalOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    """Users are the ``(iss, sub)`` of their ID token, never their email."""

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return User.objects.filter(oidc_issuer=settings.OIDC_OP_ISSUER, oidc_subject=str(claims.get("sub", "")))
