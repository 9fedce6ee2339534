"""Reads of the audit trail, scoped to the user: pages, API and export start here."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from audit.models import AuditEvent
from keystores.selectors import is_superuser, keystores_for


def events_for(user: Any) -> QuerySet[AuditEvent]:
    """Events ``user`` may read: those of keystores they hold any role in; superusers everything.

    Events of no keystore (e.g. a refused keystore creation) are for superusers
    only. Keystores are soft-deleted and keep their members, so their events stay
    readable. The keystore ids are fetched first (one small query) so PostgreSQL
    plans the event query with the actual ids, which keeps it on the
    ``(keystore_id, -seq)`` index at millions of events.
    """
    if is_superuser(user):
        return AuditEvent.objects.all()
    keystore_ids = list(keystores_for(user).values_list("pk", flat=True))
    if not keystore_ids:
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(keystore_id__in=keystore_ids)


def can_check_chain(user: Any) -> bool:
    """Whether ``user`` may verify the chain and read its head.

    Verification walks every event, including those of keystores the user cannot
    see, but its answer (ok, a count, a sequence number and a hash) reveals no
    event's content. Auditing is the auditor's job, so any user holding at least the
    auditor role in some keystore may run it, as may superusers; users with no
    role anywhere may not (the walk is expensive, and they have nothing to audit).
    """
    return is_superuser(user) or keystores_for(user).exists()
