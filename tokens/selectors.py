"""Reads of tokens and service accounts."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from byok_portal.errors import NotFound
from keystores.selectors import Viewer, is_superuser
from tokens.models import ApiToken


def tokens_of(owner: User) -> QuerySet[ApiToken]:
    """An account's tokens, newest first, with their keystores (two queries however many)."""
    return (
        ApiToken.objects.filter(owner=owner)
        .select_related("owner")
        .prefetch_related("keystores")
        .order_by("-created_at", "id")
    )


def service_accounts(viewer: Viewer) -> QuerySet[User]:
    """Service accounts with their tokens: superusers only (others see none)."""
    if not is_superuser(viewer):
        return User.objects.none()
    tokens = ApiToken.objects.prefetch_related("keystores").order_by("-created_at", "id")
    return (
        User.objects.filter(is_service_account=True)
        .prefetch_related(Prefetch("api_tokens", queryset=tokens))
        .order_by("username")
    )


def service_account_for(viewer: Viewer, user_id: int | str) -> User:
    """One service account a superuser manages; anyone else, or any other account: 404."""
    try:
        pk = int(user_id)
    except (TypeError, ValueError) as exc:
        raise NotFound("Service account not found.") from exc
    account = service_accounts(viewer).filter(pk=pk).first()
    if account is None:
        raise NotFound("Service account not found.")
    return account


def owner_for(viewer: Viewer, owner_id: int | str | None) -> User | None:
    """Whose tokens a request means: none given is the caller's own; another id must be a service account."""
    if owner_id is None or owner_id == "":
        return None
    return service_account_for(viewer, owner_id)


def parse_token_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFound("Token not found.") from exc
