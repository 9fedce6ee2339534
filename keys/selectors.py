"""Every read of keys: scoped to the user for pages and the API, unscoped for the portal's own jobs.

Scoping starts from ``keystores.selectors`` (who holds which role where); the rules a
query filters by (expected KMS state, expiring, due for cleanup) come from the lifecycle
table's module, :mod:`keys.lifecycle`, so they are written once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from audit.selectors import FilterNames
from byok_portal.errors import NotFound
from byok_portal.vocabulary import KeyState, Operation, Outcome
from keys.lifecycle import (
    due_for_cleanup_q,
    expiring_q,
    material_expiring_q,
    needs_attention_q,
    rotation_due_soon_q,
    rotation_overdue_q,
)
from keys.models import Key, KeyMaterial, KeyReplica, PendingCreation
from keys.serializers import ROW_COLUMNS
from keystores.models import ROLE_RANK, Keystore, Membership, Role
from keystores.selectors import Viewer, is_superuser, keystores_for, require_role, within_restriction

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
    keys = within_restriction(user, Key.objects.all() if within is None else within.all(), "keystore_id")
    if is_superuser(user):
        return keys
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
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


# Set up once (17 columns and a join); ``keys_for`` narrows a copy of it, never the original.
_ROWS = Key.objects.values(*ROW_COLUMNS, "replaced_by", download_prepared=DOWNLOAD_PREPARED)


def key_rows(user: Viewer) -> QuerySet[Key, dict[str, Any]]:
    """The keys ``user`` may see, as the column dicts the API's key list is written from.

    One query: ``ROW_COLUMNS``, whether a download is prepared, and ``replaced_by``, the
    reverse side of the one-to-one, as a LEFT JOIN on the unique ``replaces_id`` (at most
    one successor, so no row repeats). No model instances: ``keys.serializers.represent_rows``
    writes the JSON straight from the columns. The FilterSet and the cursor work on it
    as on model instances.
    """
    return keys_for(user, within=_ROWS)


@contextmanager
def native_timestamps() -> Iterator[None]:
    """Within the block, the ORM's queries parse ``timestamptz`` with psycopg's C loader.

    Django registers a pure-Python subclass of psycopg's loader only to pin the
    returned ``tzinfo`` to its connection time zone; with ``USE_TZ`` that zone is UTC,
    which is also the session ``TimeZone`` Django sets, and for that setting psycopg's
    own loader returns the very same ``datetime.timezone.utc`` values. A key page
    parses four timestamps a row; this is a third of the page query's Python time.
    Anything else (another time zone, another database) keeps Django's loader.
    """
    if not (settings.USE_TZ and connection.vendor == "postgresql" and connection.timezone_name == "UTC"):
        yield
        return
    from psycopg.postgres import adapters
    from psycopg.pq import Format

    fast = adapters.get_loader(adapters.types["timestamptz"].oid, Format.TEXT)

    def use_native_loader(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        context["cursor"].cursor.adapters.register_loader("timestamptz", fast)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(use_native_loader):
        yield


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


def with_expiring_material(now: dt.datetime) -> Exists:
    """A filter for keys holding a material that expires in KMS within the re-import margin (or expired)."""
    return Exists(KeyMaterial.objects.filter(material_expiring_q(now), key=OuterRef("pk")))


def rotation_counts(user: Viewer, today: dt.date, now: dt.datetime) -> dict[str, int]:
    """How many of the user's keys are overdue for rotation, due soon, and hold material expiring in KMS (one query)."""
    return keys_for(user).aggregate(
        overdue=Count("id", filter=rotation_overdue_q(today)),
        due_soon=Count("id", filter=rotation_due_soon_q(today)),
        material_expiring=Count("id", filter=Q(with_expiring_material(now))),
    )


def keys_due_for_rotation(user: Viewer, today: dt.date) -> QuerySet[Key]:
    """Keys overdue for rotation or due within the warning window, the earliest date first."""
    return (
        keys_for(user)
        .filter(rotation_overdue_q(today) | rotation_due_soon_q(today))
        .select_related("keystore")
        .order_by("next_rotation_date", "id")
    )


def keys_with_material_expiring(user: Viewer, now: dt.datetime) -> QuerySet[Key]:
    """Keys with a material KMS holds that expires within the re-import margin (or has expired), soonest first.

    ``material_valid_to`` is each key's earliest such ValidTo.
    """
    earliest = (
        KeyMaterial.objects.filter(material_expiring_q(now), key=OuterRef("pk"))
        .order_by()
        .values("key")
        .annotate(first=Min("valid_to"))
        .values("first")
    )
    return (
        keys_for(user)
        .filter(with_expiring_material(now))
        .annotate(material_valid_to=Subquery(earliest))
        .select_related("keystore")
        .order_by("material_valid_to", "id")
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


def _activity_q(key: Key) -> Q:
    """A key's activity: its own audit events and, for a renewed key, the renewal that created it.

    The renewal is recorded on the key renewed (the old one), its details naming the new
    key (``renewed_by``); the new key's activity starts with it.
    """
    own = Q(key_id=key.pk)
    if key.replaces_id is None:
        return own
    created = Q(
        key_id=key.replaces_id,
        operation=Operation.RENEW,
        outcome=Outcome.SUCCESS,
        details__renewed_by=str(key.pk),
    )
    return own | created


def recent_events(key: Key, limit: int) -> QuerySet[AuditEvent]:
    """The key's latest audit events (the key page's excerpt), the renewal that created it included."""
    return AuditEvent.objects.filter(_activity_q(key)).order_by("-seq")[:limit]


def audit_filter_names(user: AbstractBaseUser | AnonymousUser, max_keys: int) -> FilterNames:
    """The audit page's name filters: the user's keystores by name, their newest ``max_keys`` keys."""
    if not isinstance(user, User):  # anonymous: no role anywhere
        return FilterNames(keystores=(), keys=())
    keystores = list(keystores_for(user).order_by("name", "id").values_list("pk", "name"))
    keys = list(keys_for(user).order_by("-created_at", "id").values("pk", "name", "alias")[:max_keys])
    return FilterNames(keystores=keystores, keys=keys)


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


def portal_kms_arns(keystore: Keystore) -> set[str]:
    """ARNs of every portal KMS key in the keystore's AWS account and region (any keystore, any state).

    Replicas count: another keystore's multi-Region key may have one in this keystore's home region.
    """
    account, region = keystore.aws_account_id, keystore.region
    primaries = Key.objects.filter(keystore__aws_account_id=account, keystore__region=region).values_list(
        "kms_key_arn", flat=True
    )
    replicas = KeyReplica.objects.filter(key__keystore__aws_account_id=account, region=region).values_list(
        "kms_key_arn", flat=True
    )
    return {arn for arn in [*primaries, *replicas] if arn}


def kms_key_owned(arn: str) -> bool:
    """Whether a portal key (any state) owns the KMS key ``arn``, as its primary or as one of its replicas."""
    return Key.objects.filter(kms_key_arn=arn).exists() or KeyReplica.objects.filter(kms_key_arn=arn).exists()


def creation_in_progress(key_id: str) -> bool:
    """A create or renew of ``key_id`` has a journal row: it runs, or waits for ``recover_pending_creations``."""
    return PendingCreation.objects.filter(key_id=key_id).exists()
