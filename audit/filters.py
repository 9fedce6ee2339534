"""The one filter set of the audit trail, shared by the audit pages, the list endpoint and export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.db.models import Q, QuerySet, Subquery

from audit.models import AuditEvent
from byok_portal.filters import UUIDFilter
from byok_portal.vocabulary import Operation, Outcome

# Bounds beyond these hold no event and may not even convert to UTC (year 1 at +14:00):
# they are answered without asking the database.
_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _in_utc(value: datetime) -> datetime:
    """The instant in UTC. Python allows offsets up to ±24 h, PostgreSQL only ±15:59, so never send the offset."""
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past the calendar's edge
        return _EARLIEST if value.year < 5000 else _LATEST


class AuditEventFilter(django_filters.FilterSet):
    """Filters of SPEC §6: keystore, key, actor, operation, outcome and a time range.

    Each one is an equality (or range) on an indexed column, so filtering stays
    fast at millions of events.
    """

    keystore = UUIDFilter(field_name="keystore_id", label="Keystore ID")
    key = UUIDFilter(field_name="key_id", label="Key ID")
    actor = django_filters.CharFilter(
        method="filter_actor", label="Actor", help_text="OIDC subject or display name, exactly."
    )
    operation = django_filters.ChoiceFilter(choices=[(op.value, op.value) for op in Operation], label="Operation")
    outcome = django_filters.ChoiceFilter(choices=Outcome.choices, label="Outcome")
    since = django_filters.IsoDateTimeFilter(
        method="filter_since",
        label="Since",
        help_text="ISO 8601, inclusive; UTC unless an offset is given.",
    )
    until = django_filters.IsoDateTimeFilter(
        method="filter_until",
        label="Until",
        help_text="ISO 8601, inclusive; UTC unless an offset is given.",
    )

    class Meta:
        model = AuditEvent
        fields: list[str] = []

    def filter_actor(self, queryset: QuerySet[AuditEvent], name: str, value: Any) -> QuerySet[AuditEvent]:
        # An OR of two columns cannot walk either (column, -seq) index in order; it is
        # almost always one or the other, so look first (two index probes) and filter on that one.
        by_sub = AuditEvent.objects.filter(actor_sub=value).exists()
        by_name = AuditEvent.objects.filter(actor_name=value).exists()
        if by_sub and by_name:
            return queryset.filter(Q(actor_sub=value) | Q(actor_name=value))
        return queryset.filter(actor_name=value) if by_name else queryset.filter(actor_sub=value)

    # Times never decrease along seq (audit.services.record), so a time bound is also a
    # seq bound, found with one probe of the (time, seq) index. The list then stays one
    # backward range scan on seq however wide the window; the time condition is kept too.
    def filter_since(self, queryset: QuerySet[AuditEvent], name: str, value: datetime) -> QuerySet[AuditEvent]:
        value = _in_utc(value)
        if value <= _EARLIEST:
            return queryset
        if value >= _LATEST:
            return queryset.none()
        first = AuditEvent.objects.filter(time__gte=value).order_by("time", "seq").values("seq")[:1]
        return queryset.filter(time__gte=value, seq__gte=Subquery(first))

    def filter_until(self, queryset: QuerySet[AuditEvent], name: str, value: datetime) -> QuerySet[AuditEvent]:
        value = _in_utc(value)
        if value >= _LATEST:
            return queryset
        if value <= _EARLIEST:
            return queryset.none()
        last = AuditEvent.objects.filter(time__lte=value).order_by("-time", "-seq").values("seq")[:1]
        return queryset.filter(time__lte=value, seq__lte=Subquery(last))
