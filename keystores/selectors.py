"""Reads scoped to the user: every page and endpoint starts here.

Outsiders get :class:`NotFound` (never learning that a keystore or key exists);
members whose role is too weak get :class:`PermissionRefused`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.db.models import Exists, OuterRef, QuerySet

from byok_portal.errors import NotFound, PermissionRefused
from keystores.models import ROLE_RANK, Keystore, Membership, Role

if TYPE_CHECKING:
    from accounts.models import User
    from keys.models import Key


def is_superuser(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_superuser", False))


def keystores_for(user: Any, *, min_role: Role = Role.AUDITOR) -> QuerySet[Keystore]:
    """Keystores ``user`` holds at least ``min_role`` in (superusers: all)."""
    if is_superuser(user):
        return Keystore.objects.all()
    if not getattr(user, "is_authenticated", False):
        return Keystore.objects.none()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[min_role]]
    member = Membership.objects.filter(keystore=OuterRef("pk"), user=user, role__in=roles)
    return Keystore.objects.filter(Exists(member))


def role_in(user: Any, keystore: Keystore) -> Role | None:
    """The user's role in ``keystore`` (superusers act as admins everywhere)."""
    if is_superuser(user):
        return Role.ADMIN
    if not getattr(user, "is_authenticated", False):
        return None
    role = Membership.objects.filter(keystore=keystore, user=user).values_list("role", flat=True).first()
    return Role(role) if role else None


def require_role(user: Any, keystore: Keystore, role: Role) -> Role:
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


def get_keystore_for(user: Any, keystore_id: Any, *, role: Role = Role.AUDITOR) -> Keystore:
    keystore = Keystore.objects.filter(pk=_parse_uuid(keystore_id, "Keystore")).first()
    if keystore is None:
        raise NotFound("Keystore not found.")
    require_role(user, keystore, role)
    return keystore


_Row = TypeVar("_Row")


@overload
def keys_for(user: Any) -> QuerySet[Key]: ...
@overload
def keys_for(user: Any, within: QuerySet[Key, _Row]) -> QuerySet[Key, _Row]: ...
def keys_for(user: Any, within: QuerySet[Key, Any] | None = None) -> QuerySet[Key, Any]:
    """Keys in keystores the user can see (those of ``keystores_for(user)``).

    ``within`` narrows a prepared queryset of keys instead of starting from all keys
    (the key list reuses one ``values()`` query). Scoped on the membership table's
    keystore ids directly: the same rows as ``keystore__in=keystores_for(user)`` with
    one subquery instead of two nested ones, which every key list compiles per request.
    """
    from keys.models import Key

    keys = Key.objects.all() if within is None else within.all()
    if is_superuser(user):
        return keys
    if not getattr(user, "is_authenticated", False):
        return keys.none()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role.AUDITOR]]
    return keys.filter(keystore_id__in=Membership.objects.filter(user=user, role__in=roles).values("keystore_id"))


def get_key_for(user: Any, key_id: Any, *, role: Role = Role.AUDITOR) -> Key:
    from keys.models import Key

    key = Key.objects.select_related("keystore").filter(pk=_parse_uuid(key_id, "Key")).first()
    if key is None:
        raise NotFound("Key not found.")
    try:
        require_role(user, key.keystore, role)
    except NotFound as exc:
        raise NotFound("Key not found.") from exc
    return key


def members_of(keystore: Keystore) -> QuerySet[Membership]:
    return keystore.memberships.select_related("user").order_by("role", "user__username")


def can_create_keystores(user: User | Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.has_perm("keystores.add_keystore"))
