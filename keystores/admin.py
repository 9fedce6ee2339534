"""Keystores and their members in the OTP admin site.

Every change goes through :mod:`keystores.services`, so the admin is audited like
the pages and the API: edits call ``keystore_update``, member rows call
``membership_set`` / ``membership_remove``, and "delete" is the service's soft delete.
Keystores are created in the portal, where the IAM setup guide follows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest

from accounts.identity import Actor, client_ip
from byok_portal.admin import admin_site
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import ServiceError
from byok_portal.web import aws_error_text, refusal_text
from keystores import services
from keystores.models import Keystore, Membership, Role

if TYPE_CHECKING:
    # Typed for mypy (django-stubs); Django's own admin classes are not subscriptable at run time.
    KeystoreModelAdmin = admin.ModelAdmin[Keystore]
    MembershipModelAdmin = admin.ModelAdmin[Membership]
    MembershipTabularInline = admin.TabularInline[Membership, Keystore]
else:
    KeystoreModelAdmin = MembershipModelAdmin = admin.ModelAdmin
    MembershipTabularInline = admin.TabularInline


def admin_actor(request: HttpRequest) -> Actor:
    """The platform admin acting in the admin site, under their own identity."""
    return Actor.for_user(request.user, source_ip=client_ip(request))  # type: ignore[arg-type]


def report(model_admin: admin.ModelAdmin[Any], request: HttpRequest, exc: Exception, what: str) -> None:
    """Show a service refusal or an AWS error as an admin message (never a 500); a wait for approvals as a warning."""
    if isinstance(exc, ApprovalPending):
        model_admin.message_user(request, f"{what}: waits for approval. {exc.detail}", level=messages.WARNING)
        return
    if isinstance(exc, AwsError):
        text = aws_error_text(exc)
    elif isinstance(exc, ServiceError):
        text = refusal_text(exc)
    else:
        text = " ".join(getattr(exc, "messages", [str(exc)]))
    model_admin.message_user(request, f"{what}: {text}", level=messages.ERROR)


class MembershipInline(MembershipTabularInline):
    """Members edited in place; saved through the membership services (see ``KeystoreAdmin.save_formset``)."""

    model = Membership
    extra = 1
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Keystore, site=admin_site)
class KeystoreAdmin(KeystoreModelAdmin):
    """Keystores: name, role ARN and auto re-upload are editable; account, region and external id never change."""

    list_display = ("name", "aws_account_id", "region", "state", "last_check_ok", "last_check_at")
    list_filter = ("state", "region", "last_check_ok")
    search_fields = ("name", "=aws_account_id", "=external_id")
    readonly_fields = (
        "aws_account_id",
        "region",
        "external_id",
        "state",
        "last_check_at",
        "last_check_ok",
        "last_check_error",
        "created_at",
        "updated_at",
        "created_by",
    )
    fields = ("name", "role_arn", "auto_reupload", *readonly_fields)
    inlines = (MembershipInline,)
    actions = ("test_connection", "soft_delete")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created in the portal, which then shows the IAM setup guide

    def has_delete_permission(self, request: HttpRequest, obj: Keystore | None = None) -> bool:
        return False  # the "Delete keystore" action is the service's soft delete

    def save_model(self, request: HttpRequest, obj: Keystore, form: ModelForm[Keystore], change: bool) -> None:
        changes = {field: form.cleaned_data[field] for field in form.changed_data if field in services.EDITABLE_FIELDS}
        if not changes:
            return
        try:
            services.keystore_update(actor=admin_actor(request), keystore_id=obj.pk, **changes)
        except (ServiceError, ValidationError) as exc:
            report(self, request, exc, "Not saved")

    def save_formset(
        self, request: HttpRequest, form: ModelForm[Keystore], formset: BaseInlineFormSet[Any, Any, Any], change: bool
    ) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        keystore: Keystore = form.instance
        actor = admin_actor(request)
        for member_form in formset.forms:
            if not member_form.has_changed() and member_form not in formset.deleted_forms:
                continue
            user = member_form.cleaned_data.get("user")
            if user is None:
                continue
            try:
                if member_form in formset.deleted_forms:
                    services.membership_remove(actor=actor, keystore_id=keystore.pk, user=user)
                else:
                    role = Role(member_form.cleaned_data["role"])
                    services.membership_set(actor=actor, keystore_id=keystore.pk, user=user, role=role)
            except ServiceError as exc:
                report(self, request, exc, f"Member {user}")

    @admin.action(description="Test the AWS connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Keystore]) -> None:
        for keystore in queryset:
            try:
                result = services.keystore_test_connection(actor=admin_actor(request), keystore_id=keystore.pk)
            except ServiceError as exc:
                report(self, request, exc, keystore.name)
                continue
            if result.last_check_ok:
                self.message_user(request, f"{keystore.name}: connection OK.", level=messages.SUCCESS)
            else:
                self.message_user(request, f"{keystore.name}: {result.last_check_error}", level=messages.ERROR)

    @admin.action(description="Delete keystore (only when all its keys are deleted)")
    def soft_delete(self, request: HttpRequest, queryset: QuerySet[Keystore]) -> None:
        for keystore in queryset:
            try:
                services.keystore_delete(actor=admin_actor(request), keystore_id=keystore.pk)
            except ServiceError as exc:
                report(self, request, exc, keystore.name)
            else:
                self.message_user(request, f"{keystore.name}: deleted.", level=messages.SUCCESS)


@admin.register(Membership, site=admin_site)
class MembershipAdmin(MembershipModelAdmin):
    """Who holds which role where; read here, changed on the keystore (through the services)."""

    list_display = ("user", "keystore", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "=user__oidc_subject", "keystore__name")
    list_select_related = ("user", "keystore")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
