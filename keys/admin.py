"""Keys in the OTP admin site: no material, state read-only, lifecycle operations as admin actions.

Every action calls the same service function as the pages and the API, with the
admin's own identity, so it is checked against the lifecycle table and audited.
The periodic task schedules (django-celery-beat), which run the daily cleanup
and reconciliation of keys, are offered on this site as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.admin import admin_site
from byok_portal.aws import AwsError
from byok_portal.errors import ServiceError
from byok_portal.vocabulary import Operation, Outcome
from keys import services
from keys.lifecycle import LIFECYCLE
from keys.models import Key
from keystores.admin import admin_actor, report

AdminAction = Callable[[Any, HttpRequest, QuerySet[Key]], None]
EDITABLE = ("name", "alias", "tags", "expires")


def lifecycle_action(operation: Operation, run: Callable[[Actor, Key], Any]) -> AdminAction:
    """An admin action running one lifecycle operation on each selected key, reporting each outcome."""
    row = LIFECYCLE[operation]

    def action(model_admin: Any, request: HttpRequest, queryset: QuerySet[Key]) -> None:
        for key in queryset.select_related("keystore"):
            actor = admin_actor(request)
            try:
                run(actor, key)
            except (ServiceError, AwsError, ValidationError) as exc:
                report(model_admin, request, exc, f"{row.label} {key.name}")
                continue
            noop = AuditEvent.objects.filter(key_id=key.pk, request_id=actor.request_id, outcome=Outcome.NOOP)
            if noop.exists():
                model_admin.message_user(request, f"{key.name}: already {key.state.lower()} — nothing changed.")
            else:
                model_admin.message_user(request, f"{row.label} {key.name}: done.", level=messages.SUCCESS)

    action.__name__ = f"run_{operation.value}"
    return admin.action(description=f"{row.label} the selected keys")(action)


@admin.register(Key, site=admin_site)
class KeyAdmin(admin.ModelAdmin):
    """Keys: name, alias, tags and expiry are edited through ``key_update``; the state never directly."""

    list_display = ("name", "alias", "keystore", "state", "kms_state", "expires", "kcv", "created_at")
    list_filter = ("state", "kms_state", "keystore")
    list_select_related = ("keystore",)
    search_fields = ("name", "alias", "=id", "=kms_key_arn", "=kcv")
    show_full_result_count = False
    # The sealed material and the prepared public key are never shown, not even sealed.
    exclude = ("material_sealed", "download_public_key")
    readonly_fields = (
        "id",
        "keystore",
        "state",
        "kms_key_arn",
        "kms_state",
        "kms_checked_at",
        "drift",
        "kcv",
        "deletion_date",
        "replaces",
        "download_prepared_by_iss",
        "download_prepared_by_sub",
        "download_prepared_at",
        "expiry_warned_on",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
    )
    actions = (
        lifecycle_action(Operation.DEACTIVATE, lambda actor, key: services.key_deactivate(actor=actor, key_id=key.pk)),
        lifecycle_action(Operation.ACTIVATE, lambda actor, key: services.key_activate(actor=actor, key_id=key.pk)),
        lifecycle_action(Operation.UPLOAD, lambda actor, key: services.key_upload(actor=actor, key_id=key.pk)),
        lifecycle_action(Operation.RENEW, lambda actor, key: services.key_renew(actor=actor, key_id=key.pk)),
        lifecycle_action(
            Operation.SCHEDULE_DELETION,
            lambda actor, key: services.key_schedule_deletion(actor=actor, key_id=key.pk),
        ),
        lifecycle_action(
            Operation.CANCEL_DELETION, lambda actor, key: services.key_cancel_deletion(actor=actor, key_id=key.pk)
        ),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created in the portal or the API, which create the KMS key too

    def has_delete_permission(self, request: HttpRequest, obj: Key | None = None) -> bool:
        return False  # "Schedule deletion" is the only way a key goes

    def save_model(self, request: HttpRequest, obj: Key, form: ModelForm, change: bool) -> None:
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in EDITABLE}
        if not changes:
            return
        try:
            services.key_update(actor=admin_actor(request), key_id=obj.pk, **changes)
        except (ServiceError, AwsError, ValidationError) as exc:
            report(self, request, exc, "Not saved")


def _offer_celery_beat_schedules() -> None:
    """django-celery-beat registers its models on Django's default site; the portal only serves the OTP site."""
    import django_celery_beat.admin  # noqa: F401 - registers the schedule admins on admin.site

    for model, model_admin in list(admin.site._registry.items()):
        if model._meta.app_label == "django_celery_beat" and not admin_site.is_registered(model):
            admin_site.register(model, type(model_admin))


_offer_celery_beat_schedules()
