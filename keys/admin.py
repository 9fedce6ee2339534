"""Keys in the OTP admin site: no material, state read-only, lifecycle operations as admin actions.

The bulk actions are the registry's buttons (:data:`keys.operations.BUTTONS`) but the repairs: each
calls the same service function as the pages and the API, with the admin's own
identity, so it is checked against the lifecycle table and audited; what the service
returns says whether anything changed.
The periodic task schedules (django-celery-beat), which run the daily cleanup
and reconciliation of keys, are offered on this site as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from byok_portal.admin import admin_site
from byok_portal.aws import AwsError
from byok_portal.errors import ServiceError
from byok_portal.vocabulary import Operation
from keys.models import Key, KeyReplica
from keys.operations import BUTTONS, REGISTRY, KeyOperation
from keystores.admin import admin_actor, report

if TYPE_CHECKING:
    # Typed for mypy (django-stubs); Django's own ModelAdmin is not subscriptable at run time.
    KeyModelAdmin = admin.ModelAdmin[Key]
    KeyReplicaTabularInline = admin.TabularInline[KeyReplica, Key]
else:
    KeyModelAdmin = admin.ModelAdmin
    KeyReplicaTabularInline = admin.TabularInline
AdminAction = Callable[[KeyModelAdmin, HttpRequest, QuerySet[Key]], None]
EDITABLE = ("name", "alias", "tags", "expires")


def lifecycle_action(entry: KeyOperation) -> AdminAction:
    """An admin action running one operation on each selected key (with its default input), reporting each outcome."""
    label = entry.row.label

    def action(model_admin: KeyModelAdmin, request: HttpRequest, queryset: QuerySet[Key]) -> None:
        for key in queryset.select_related("keystore"):
            try:
                done = entry.run(admin_actor(request), key.pk)
            except (ServiceError, AwsError, ValidationError) as exc:
                report(model_admin, request, exc, f"{label} {key.name}")
                continue
            if done.changed:
                model_admin.message_user(request, f"{label} {key.name}: done.", level=messages.SUCCESS)
            else:
                model_admin.message_user(request, f"{key.name}: already {key.state.lower()} — nothing changed.")

    action.__name__ = f"run_{entry.operation.value}"
    return admin.action(description=f"{label} the selected keys")(action)


class KeyReplicaInline(KeyReplicaTabularInline):
    """A multi-Region key's replicas, read-only: they change through the key's operations (add_replica on its page)."""

    model = KeyReplica
    extra = 0
    can_delete = False
    fields = ("region", "kms_key_arn", "kms_state", "kms_checked_at", "drift", "deletion_date")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Key | None = None) -> bool:
        return False


@admin.register(Key, site=admin_site)
class KeyAdmin(KeyModelAdmin):
    """Keys: name, alias, tags and expiry are edited through the update operation; the state never directly."""

    list_display = ("name", "alias", "keystore", "key_spec", "key_usage", "state", "kms_state", "expires", "kcv")
    list_filter = ("state", "kms_state", "key_spec", "key_usage", "keystore")
    list_select_related = ("keystore",)
    search_fields = ("name", "alias", "=id", "=kms_key_arn", "=kcv", "=public_key_sha256")
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
        "key_spec",
        "key_usage",
        "kcv",
        "public_key",
        "public_key_sha256",
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
    # Not the repairs (recreate): each is offered on its key's page, which says why the key needs it.
    actions = tuple(lifecycle_action(entry) for entry in BUTTONS.values() if entry.row.repairs is None and entry.bulk)
    inlines = (KeyReplicaInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created in the portal or the API, which create the KMS key too

    def has_delete_permission(self, request: HttpRequest, obj: Key | None = None) -> bool:
        return False  # "Schedule deletion" is the only way a key goes

    def save_model(self, request: HttpRequest, obj: Key, form: ModelForm[Key], change: bool) -> None:
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in EDITABLE}
        if not changes:
            return
        try:
            REGISTRY[Operation.UPDATE].run(admin_actor(request), obj.pk, changes)
        except (ServiceError, AwsError, ValidationError) as exc:
            report(self, request, exc, "Not saved")


def _offer_celery_beat_schedules() -> None:
    """django-celery-beat registers its models on Django's default site; the portal only serves the OTP site."""
    import django_celery_beat.admin  # noqa: F401 - registers the schedule admins on admin.site

    for model, model_admin in list(admin.site._registry.items()):
        if model._meta.app_label == "django_celery_beat" and not admin_site.is_registered(model):
            admin_site.register(model, type(model_admin))


_offer_celery_beat_schedules()
