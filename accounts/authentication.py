"""DRF authentication with OIDC ID tokens as bearer tokens (SPEC §3)."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from accounts.models import User
from accounts.services import user_for_claims
from accounts.tokens import InvalidIDToken, oidc_configured, verify_id_token

logger = logging.getLogger(__name__)


class BearerIDTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <ID token>``, verified against the provider's JWKS.

    Returns ``(user, claims)``: ``request.auth`` holds the verified claims, from which
    :func:`accounts.identity.actor_from_request` takes the ``(iss, sub)`` of the
    person calling. A valid token of an unknown subject provisions an account with
    no roles, exactly like a first browser login. Any other ``Authorization``
    scheme is left to the next authentication class; a bearer token that does not
    verify is a 401 saying why, never a fall-through to anonymous access.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, dict[str, Any]] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Malformed Authorization header: expected 'Bearer <ID token>'.")
        if not oidc_configured():
            raise AuthenticationFailed("Bearer tokens are not accepted: OpenID Connect is not configured.")
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("Invalid ID token: The token is not a well-formed JWT.") from exc
        try:
            claims = verify_id_token(token)
        except InvalidIDToken as exc:
            logger.info("bearer token refused: %s", exc)
            raise AuthenticationFailed(f"Invalid ID token: {exc}") from exc
        user = user_for_claims(claims, create=True)
        if user is None or not user.is_active:
            raise AuthenticationFailed("This account is disabled.")
        return user, claims

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
