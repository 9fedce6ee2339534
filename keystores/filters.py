"""The one filter set of keystores: shared by the keystore list page and ``GET /api/v1/keystores/``."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from keystores.models import Keystore, KeystoreState, kms_regions


class KeystoreFilter(django_filters.FilterSet):
    """Filter by state, AWS account, region, or a free-text search over name and account.

    Request-independent: callers pass a queryset already scoped by
    ``keystores.selectors.keystores_for``.
    """

    state = django_filters.ChoiceFilter(choices=KeystoreState.choices, label="State")
    aws_account_id = django_filters.CharFilter(field_name="aws_account_id", label="AWS account ID")
    region = django_filters.ChoiceFilter(choices=[(r, r) for r in kms_regions()], label="Region")
    search = django_filters.CharFilter(
        method="filter_search", label="Search", help_text="Part of the name or AWS account ID (case-insensitive)."
    )

    class Meta:
        model = Keystore
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[Keystore], name: str, value: Any) -> QuerySet[Keystore]:
        text = str(value).strip()
        if not text:
            return queryset
        return queryset.filter(Q(name__icontains=text) | Q(aws_account_id__icontains=text))
