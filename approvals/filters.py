"""The one filter set of approval requests: the inbox page and ``GET /api/v1/approvals/``."""

from __future__ import annotations

import django_filters

from approvals.models import ApprovalRequest, RequestState


class ApprovalFilter(django_filters.FilterSet):
    """Filter by state, keystore or key; callers pass requests already scoped by ``approvals.services.requests_for``."""

    state = django_filters.ChoiceFilter(choices=RequestState.choices, label="State")
    keystore = django_filters.UUIDFilter(field_name="keystore_id", label="Keystore")
    key = django_filters.UUIDFilter(field_name="key_id", label="Key")

    class Meta:
        model = ApprovalRequest
        fields: list[str] = []
