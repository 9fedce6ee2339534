"""The one filter set of keys: shared by the key list page and ``GET /api/v1/keys/``."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from byok_portal.filters import BooleanFilter, UUIDFilter
from byok_portal.vocabulary import KeyState
from keys.models import Key, KeyReplica
from keys.specs import KeySpec, KeyUsage


class KeyFilter(django_filters.FilterSet):
    """Filters of SPEC §6, §9 and §11: ``keystore``, ``state``, ``key_spec``, ``key_usage``, ``alias``,
    ``multi_region``, ``region``, free-text ``search``.

    Request-independent on purpose: callers pass a queryset already scoped to the
    user (``keys.selectors.keys_for``), so the page and the API filter the same
    rows the same way.
    """

    keystore = UUIDFilter(field_name="keystore_id", label="Keystore ID")
    state = django_filters.ChoiceFilter(choices=KeyState.choices, label="State")
    key_spec = django_filters.ChoiceFilter(choices=KeySpec.choices, label="Key spec")
    key_usage = django_filters.ChoiceFilter(choices=KeyUsage.choices, label="Key usage")
    alias = django_filters.CharFilter(field_name="alias", label="Alias", help_text="Exact alias, e.g. alias/orders.")
    multi_region = BooleanFilter(field_name="multi_region", label="Multi-Region")
    region = django_filters.CharFilter(
        method="filter_region",
        label="Region",
        help_text="Keys present in this AWS region: their keystore's, or one of a multi-Region key's replicas.",
    )
    search = django_filters.CharFilter(
        method="filter_search",
        label="Search",
        help_text="Part of the name, alias or KMS key ARN (case-insensitive), or the whole key ID.",
    )

    class Meta:
        model = Key
        fields: list[str] = []

    def filter_region(self, queryset: QuerySet[Key], name: str, value: Any) -> QuerySet[Key]:
        region = str(value).strip()
        if not region:
            return queryset
        replicated = KeyReplica.objects.filter(region=region).values("key_id")
        return queryset.filter(Q(keystore__region=region) | Q(pk__in=replicated))

    def filter_search(self, queryset: QuerySet[Key], name: str, value: Any) -> QuerySet[Key]:
        text = str(value).strip()
        if not text:
            return queryset
        match = Q(name__icontains=text) | Q(alias__icontains=text) | Q(kms_key_arn__icontains=text)
        with contextlib.suppress(ValueError):  # not an ID: search the text fields only
            match |= Q(pk=uuid.UUID(text))
        return queryset.filter(match)
