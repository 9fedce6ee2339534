"""DRF authentication with OIDC ID tokens as bearer tokens (SPEC §3)."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request


class BearerIDTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <ID token>``, verified against the provider's JWKS."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        return None
