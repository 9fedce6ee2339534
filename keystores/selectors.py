"""Reads scoped to the user: every page and endpoint starts here.

Outsiders get :class:`NotFound` (never learning that a keystore or key exists);
members whose role is too weak get :class:`PermissionRefused`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeAlias

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from audit.selectors import Scope
from byok_portal.errors import NotFound, PermissionRefused
from byok_portal.vocabulary import KeyState
from keystores.models import ROLE_RANK, Keystore, Membership, Role

if TYPE_CHECKING:
    from accounts.models import User

# Whoever a request carries: a signed-in user or nobody.
Viewer: TypeAlias = "User | AnonymousUser"


def is_superuser(user: Viewer) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_superuser", False))


def restriction(user: Viewer) -> frozenset[uuid.UUID] | None:
    """The only keystores this request may reach, when its credential says so (an API token limited to some).

    Applied here, once, by every scoped read below and by ``keys.selectors``: outside the
    list a keystore is as unknown as one the user has no role in (superusers included).
    """
    restricted: frozenset[uuid.UUID] | None = getattr(user, "keystore_restriction", None)
    return restricted


def within_restriction(user: Viewer, queryset: QuerySet[Any], field: str = "pk") -> QuerySet[Any]:
    """``queryset`` narrowed to the request's keystore restriction (``field`` names the keystore id)."""
    restricted = restriction(user)
    return queryset if restricted is None else queryset.filter(**{f"{field}__in": restricted})


def beyond_restriction(user: Viewer, queryset: QuerySet[Any], field: str = "pk") -> QuerySet[Any]:
    """The rows of ``queryset`` outside the request's keystore restriction (none without one).

    For what spans keystores (a bulk job's items): what touches any keystore in here is as
    unknown to the request as a keystore outside its list.
    """
    restricted = restriction(user)
    return queryset.none() if restricted is None else queryset.exclude(**{f"{field}__in": restricted})


def keystores_for(user: Viewer, *, min_role: Role = Role.AUDITOR) -> QuerySet[Keystore]:
    """Keystores ``user`` holds at least ``min_role`` in (superusers: all), within the request's restriction."""
    if is_superuser(user):
        return within_restriction(user, Keystore.objects.all())
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        return Keystore.objects.none()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[min_role]]
    member = Membership.objects.filter(keystore=OuterRef("pk"), user=user, role__in=roles)
    return within_restriction(user, Keystore.objects.filter(Exists(member)))


def role_in(user: Viewer, keystore: Keystore) -> Role | None:
    """The user's role in ``keystore`` (superusers act as admins everywhere); none outside the restriction."""
    restricted = restriction(user)
    if restricted is not None and keystore.pk not in restricted:
        return None
    if is_superuser(user):
        return Role.ADMIN
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        return None
    role = Membership.objects.filter(keystore=keystore, user=user).values_list("role", flat=True).first()
    return Role(role) if role else None


def require_role(user: Viewer, keystore: Keystore, role: Role) -> Role:
    """The user's role if it is at least ``role``; NotFound for outsiders, PermissionRefused for weaker members."""
    held = role_in(user, keystore)
    if held is None:
        raise NotFound("Keystore not found.")
    if ROLE_RANK[held] < ROLE_RANK[role]:
        raise PermissionRefused(f"This needs the {role.label.lower()} role in keystore {keystore.name!r}.")
    return held


def _parse_uuid(value: Any, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFound(f"{what} not found.") from exc


def get_keystore_for(user: Viewer, keystore_id: uuid.UUID | str, *, role: Role = Role.AUDITOR) -> Keystore:
    keystore = Keystore.objects.filter(pk=_parse_uuid(keystore_id, "Keystore")).first()
    if keystore is None:
        raise NotFound("Keystore not found.")
    require_role(user, keystore, role)
    return keystore


def with_key_counts(queryset: QuerySet[Keystore]) -> QuerySet[Keystore]:
    """Annotate keystores with their live and active key counts (one grouped query)."""
    return queryset.annotate(
        live_keys=Count("keys", filter=~Q(keys__state=KeyState.DELETED)),
        active_keys=Count("keys", filter=Q(keys__state=KeyState.ACTIVE)),
    )


def members_of(keystore: Keystore) -> QuerySet[Membership]:
    return keystore.memberships.select_related("user").order_by("role", "user__username")


def can_create_keystores(user: Viewer) -> bool:
    # A credential limited to some keystores cannot make new ones: they would lie outside its limit.
    if restriction(user) is not None:
        return False
    return bool(getattr(user, "is_authenticated", False) and user.has_perm("keystores.add_keystore"))


def audit_scope(user: AbstractBaseUser | AnonymousUser) -> Scope:
    """Whose audit events ``user`` may read: every keystore's for superusers, else those they hold a role in."""
    from accounts.models import User

    if not isinstance(user, User):  # anonymous: no role anywhere
        return Scope(everything=False)
    if is_superuser(user) and restriction(user) is None:
        return Scope(everything=True)
    return Scope(everything=False, keystore_ids=tuple(keystores_for(user).values_list("pk", flat=True)))
