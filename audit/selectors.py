"""Reads of the audit trail, scoped to the reader: pages, API and export start here.

Who may read which keystores' events is not the trail's to decide: memberships live
above it, in ``keystores``. That app hands its rule in once at start-up
(:func:`scope_events_by`, from ``KeystoresConfig.ready``), so the trail imports nothing
above the kernel. The names the audit page offers as filters (the reader's keystores and
keys) come the same way, from ``keys`` (:func:`name_filters_by`, from ``KeysConfig.ready``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet

from audit.models import AuditEvent


@dataclass(frozen=True)
class Scope:
    """The keystores whose events a reader may see: every event (superusers), or those of ``keystore_ids``."""

    everything: bool
    keystore_ids: tuple[uuid.UUID, ...] = ()


# Whoever a request carries; the trail does not know the project's user model, only Django's.
Reader = AbstractBaseUser | AnonymousUser
_scope_rule: Callable[[Reader], Scope] | None = None


def scope_events_by(rule: Callable[[Reader], Scope]) -> None:
    """Install the rule that says which keystores' events a user may read."""
    global _scope_rule
    _scope_rule = rule


def _scope(user: Reader) -> Scope:
    if _scope_rule is None:
        raise ImproperlyConfigured("No audit read scope installed: is the keystores app in INSTALLED_APPS?")
    return _scope_rule(user)


@dataclass(frozen=True)
class FilterNames:
    """What a reader may filter events by, by name: keystores as (id, name), keys as {pk, name, alias}."""

    keystores: Sequence[tuple[uuid.UUID, str]]
    keys: Sequence[Mapping[str, Any]]


# (reader, at most this many keys) -> their names.
_names_rule: Callable[[Reader, int], FilterNames] | None = None


def name_filters_by(rule: Callable[[Reader, int], FilterNames]) -> None:
    """Install the rule that lists the keystores and keys a reader may filter events by."""
    global _names_rule
    _names_rule = rule


def filter_names(user: Reader, max_keys: int) -> FilterNames:
    """The reader's keystores (by name) and up to ``max_keys`` of their keys (newest first)."""
    if _names_rule is None:
        raise ImproperlyConfigured("No audit filter names installed: is the keys app in INSTALLED_APPS?")
    return _names_rule(user, max_keys)


def events_for(user: Reader) -> QuerySet[AuditEvent]:
    """Events ``user`` may read: those of keystores they hold any role in; superusers everything.

    Events of no keystore (e.g. a refused keystore creation) are for superusers
    only. Keystores are soft-deleted and keep their members, so their events stay
    readable. The keystore ids are fetched first (one small query) so PostgreSQL
    plans the event query with the actual ids, which keeps it on the
    ``(keystore_id, -seq)`` index at millions of events.
    """
    scope = _scope(user)
    if scope.everything:
        return AuditEvent.objects.all()
    if not scope.keystore_ids:
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(keystore_id__in=scope.keystore_ids)


def can_check_chain(user: Reader) -> bool:
    """Whether ``user`` may verify the chain and read its head.

    Verification walks every event, including those of keystores the user cannot
    see, but its answer (ok, a count, a sequence number and a hash) reveals no
    event's content. Auditing is the auditor's job, so any user holding at least the
    auditor role in some keystore may run it, as may superusers; users with no
    role anywhere may not (the walk is expensive, and they have nothing to audit).
    """
    scope = _scope(user)
    return scope.everything or bool(scope.keystore_ids)
