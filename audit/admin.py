"""The audit trail in the Django admin: searchable and filterable, never editable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.models import AuditEvent
from byok_portal.admin import admin_site
from byok_portal.vocabulary import Operation, Outcome


class OperationFilter(admin.SimpleListFilter):
    """Operations from the lifecycle table (not ``SELECT DISTINCT`` over millions of rows)."""

    title = "operation"
    parameter_name = "operation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(op.value, op.value) for op in Operation]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        return queryset.filter(operation=self.value()) if self.value() else queryset


class OutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Outcome.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        return queryset.filter(outcome=self.value()) if self.value() else queryset


if TYPE_CHECKING:
    # Typed for mypy (django-stubs); Django's own ModelAdmin is not subscriptable at run time.
    AuditEventModelAdmin = admin.ModelAdmin[AuditEvent]
else:
    AuditEventModelAdmin = admin.ModelAdmin


@admin.register(AuditEvent, site=admin_site)
class AuditEventAdmin(AuditEventModelAdmin):
    """Read-only: no add, change or delete, whoever asks (the database refuses them too)."""

    list_display = ("seq", "time", "operation", "outcome", "reason", "actor_name", "keystore_name", "key_alias")
    list_filter = (OutcomeFilter, OperationFilter)
    # Exact matches only: they use the indexes, where substring search would scan millions of rows.
    search_fields = ("=actor_sub", "=actor_name", "=key_alias", "=keystore_name", "=request_id", "=key_arn")
    ordering = ("-seq",)
    show_full_result_count = False
    actions = None
    fields = (
        "seq",
        "time",
        ("actor_iss", "actor_sub", "actor_name"),
        ("source_ip", "request_id"),
        ("operation", "outcome", "reason"),
        ("keystore_id", "keystore_name"),
        ("key_id", "key_alias", "key_arn"),
        ("state_before", "state_after"),
        "kms_request_ids",
        "error",
        "details",
        "hash",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
