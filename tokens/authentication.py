"""``Authorization: Bearer byok_…``: API tokens, next to the OIDC ID-token bearer (SPEC §13)."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from accounts.identity import TokenGrant, client_ip
from accounts.models import User
from tokens.models import TOKEN_PREFIX, Scope
from tokens.services import InvalidToken, authenticate

logger = logging.getLogger(__name__)


class InsufficientScope(exceptions.APIException):
    """A ``read`` token on a request that changes something: 403 ``insufficient_scope``."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "insufficient_scope"
    default_detail = "This API token has the read scope: it may only read (GET, HEAD, OPTIONS)."


class ApiTokenAuthentication(BaseAuthentication):
    """Portal API tokens as bearer tokens; anything else is left to the next class (the ID-token one).

    Returns ``(owner, TokenGrant)``: the request acts as the token's owner, and the owner's
    account carries the token's keystore limit for this request, which ``keystores.selectors``
    applies to every scoped read. A ``read`` token is refused on unsafe methods here, before
    any view runs. A token that does not verify is a 401 saying why, never anonymous access.
    """

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, TokenGrant] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != self.keyword or not parts[1].startswith(TOKEN_PREFIX.encode()):
            return None
        try:
            owner, grant = authenticate(parts[1].decode("ascii"), ip=client_ip(request))
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Malformed API token.") from exc
        except InvalidToken as exc:
            logger.info("API token refused: %s", exc)
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        if grant.scope != Scope.WRITE and request.method not in SAFE_METHODS:
            raise InsufficientScope()
        owner.keystore_restriction = grant.keystore_ids
        return owner, grant

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer byok_…`` in the OpenAPI schema."""

    target_class = "tokens.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "byok_…",
            "description": "A portal API token (`byok_…`, made on the API tokens page or with `POST /api/v1/tokens/`): "
            "acts as its owner; `read` tokens may only read; optionally limited to some keystores.",
        }
