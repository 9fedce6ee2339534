"""Approval requests in the OTP admin site: read-only, with one action — end a stalled approved request.

Decisions (approve, reject, cancel) are made on the portal's pages and API, where the
request's full content is shown; the admin only offers the operator's repair, through
the same service (:func:`approvals.services.end_stalled`), audited and refused alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from approvals import services
from approvals.models import ApprovalRequest
from byok_portal.admin import admin_site
from byok_portal.errors import ServiceError
from keystores.admin import admin_actor, report

if TYPE_CHECKING:
    # Typed for mypy (django-stubs); Django's own admin classes are not subscriptable at run time.
    ApprovalRequestModelAdmin = admin.ModelAdmin[ApprovalRequest]
else:
    ApprovalRequestModelAdmin = admin.ModelAdmin


@admin.action(description="End the selected stalled approved requests (FAILED; refused while a run is alive)")
def end_stalled(model_admin: ApprovalRequestAdmin, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
    actor = admin_actor(request)
    ended = 0
    for approval in queryset:
        try:
            services.end_stalled(actor=actor, request_id=approval.pk)
        except ServiceError as exc:
            report(model_admin, request, exc, f"{approval.operation} request {approval.pk}")
        else:
            ended += 1
    if ended:
        model_admin.message_user(request, f"{ended} request(s) ended.", level=messages.SUCCESS)


class ApprovalRequestAdmin(ApprovalRequestModelAdmin):
    list_display = ("operation", "state", "keystore", "key", "requested_by_name", "created_at", "started_at", "runs")
    list_filter = ("state", "operation")
    actions = (end_stalled,)
    readonly_fields = tuple(field.name for field in ApprovalRequest._meta.fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> bool:
        return False


admin_site.register(ApprovalRequest, ApprovalRequestAdmin)
