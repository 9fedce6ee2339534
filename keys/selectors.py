"""Every read of keys: scoped to the user for pages and the API, unscoped for the portal's own jobs.

Scoping starts from ``keystores.selectors`` (who holds which role where); the rules a
query filters by (expected KMS state, expiring, due for cleanup) come from the lifecycle
table's module, :mod:`keys.lifecycle`, so they are written once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, TypeVar, overload

from django.contrib.auth.models import AnonymousUser
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from byok_portal.errors import NotFound
from byok_portal.vocabulary import KeyState
from keys.lifecycle import due_for_cleanup_q, expiring_q, needs_attention_q
from keys.models import Key
from keys.serializers import ROW_COLUMNS
from keystores.models import ROLE_RANK, Membership, Role
from keystores.selectors import is_superuser, require_role

# Whoever a request carries: a signed-in user or nobody.
Viewer = User | AnonymousUser

_Row = TypeVar("_Row")


# --- scoped to a user --------------------------------------------------------------------


@overload
def keys_for(user: Viewer) -> QuerySet[Key]: ...
@overload
def keys_for(user: Viewer, within: QuerySet[Key, _Row]) -> QuerySet[Key, _Row]: ...
def keys_for(user: Viewer, within: QuerySet[Key, Any] | None = None) -> QuerySet[Key, Any]:
    """Keys in keystores the user can see (those of ``keystores_for(user)``).

    ``within`` narrows a prepared queryset of keys instead of starting from all keys
    (the key list reuses one ``values()`` query). Scoped on the membership table's
    keystore ids directly: the same rows as ``keystore__in=keystores_for(user)`` with
    one subquery instead of two nested ones, which every key list compiles per request.
    """
    keys = Key.objects.all() if within is None else within.all()
    if is_superuser(user):
        return keys
    if not user.is_authenticated:
        return keys.none()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role.AUDITOR]]
    return keys.filter(keystore_id__in=Membership.objects.filter(user=user, role__in=roles).values("keystore_id"))


def get_key_for(user: Viewer, key_id: uuid.UUID, *, role: Role = Role.AUDITOR) -> Key:
    """One key the user holds at least ``role`` for; outsiders get the same 404 as for no key."""
    key = Key.objects.select_related("keystore").filter(pk=key_id).first()
    if key is None:
        raise NotFound("Key not found.")
    try:
        require_role(user, key.keystore, role)
    except NotFound as exc:
        raise NotFound("Key not found.") from exc
    return key


# Whether a download is prepared, without loading the public key itself.
DOWNLOAD_PREPARED = ExpressionWrapper(~Q(download_public_key=""), output_field=BooleanField())


def key_rows(user: Viewer) -> QuerySet[Key, dict[str, Any]]:
    """The keys ``user`` may see, as the column dicts the API's key list is written from.

    One query: ``ROW_COLUMNS``, whether a download is prepared, and ``replaced_by``, the
    reverse side of the one-to-one, as a LEFT JOIN on the unique ``replaces_id`` (at most
    one successor, so no row repeats). No model instances: ``keys.serializers.represent_rows``
    writes the JSON straight from the columns. The FilterSet and the cursor work on it
    as on model instances.
    """
    rows = Key.objects.values(*ROW_COLUMNS, "replaced_by", download_prepared=DOWNLOAD_PREPARED)
    return keys_for(user, within=rows)


def keys_by_state(user: Viewer) -> dict[str, int]:
    """How many keys the user can see, per portal state (the dashboard's counts)."""
    return dict(keys_for(user).order_by().values_list("state").annotate(n=Count("id")))


def expiring_keys(user: Viewer, today: dt.date | None = None) -> QuerySet[Key]:
    """Keys in use expiring within the warning window, soonest first."""
    return (
        keys_for(user)
        .filter(expiring_q(today or timezone.localdate()))
        .select_related("keystore")
        .order_by("expires", "id")
    )


def keys_needing_attention(user: Viewer) -> QuerySet[Key]:
    """Keys with drift or a KMS state that does not match their portal state, most recently changed first."""
    return keys_for(user).filter(needs_attention_q()).select_related("keystore").order_by("-updated_at", "id")


def renewal_neighbours(key: Key) -> tuple[Key | None, Key | None]:
    """The key this one replaced and the key that replaced it, if any (names and states only)."""
    fields = ("id", "name", "alias", "state")
    replaced_by = Key.objects.filter(replaces=key).only(*fields).first()
    replaces = Key.objects.filter(pk=key.replaces_id).only(*fields).first() if key.replaces_id else None
    return replaces, replaced_by


def recent_events(key: Key, limit: int) -> QuerySet[AuditEvent]:
    """The key's latest audit events (the key page's excerpt)."""
    return AuditEvent.objects.filter(key_id=key.pk).order_by("-seq")[:limit]


# --- the portal's own jobs (no user) --------------------------------------------------------


def due_for_cleanup(now: dt.datetime | None = None) -> QuerySet[Key]:
    """Keys whose deletion waiting period is over (the index ``keys_due_for_cleanup`` serves this)."""
    return Key.objects.filter(due_for_cleanup_q(now or timezone.now()))


def expiring_unwarned(day: dt.date) -> QuerySet[Key]:
    """Keys to warn about today: expiring within the window and not yet warned on ``day``, in id order."""
    return Key.objects.filter(expiring_q(day)).exclude(expiry_warned_on=day).select_related("keystore").order_by("id")


def reconcilable(keystore_id: uuid.UUID) -> QuerySet[Key]:
    """The keystore's keys that have a KMS key to compare with (DELETED keys are never reconciled)."""
    return Key.objects.filter(keystore_id=keystore_id).exclude(state=KeyState.DELETED).exclude(kms_key_arn="")


def live_key_for_reconciliation(key_id: uuid.UUID) -> Key | None:
    return Key.objects.select_related("keystore").exclude(state=KeyState.DELETED).filter(pk=key_id).first()
