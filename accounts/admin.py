"""Users in the OTP admin site: identity fields are read-only (fixed at creation or by the ID token)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.identity import actor_from_request
from accounts.models import User
from audit.services import record
from byok_portal.admin import admin_site
from byok_portal.vocabulary import Operation, Outcome


@admin.register(User, site=admin_site)
class PortalUserAdmin(UserAdmin):
    """Django's user admin plus the identity ``(iss, sub)``, which nobody may edit.

    Renaming an account changes its label only; the save is audited with the admin
    who made it (see ``User.save``).
    """

    list_display = (
        "username",
        "oidc_subject",
        "oidc_issuer",
        "email",
        "is_service_account",
        "is_staff",
        "is_superuser",
        "is_active",
    )
    list_filter = (*UserAdmin.list_filter, "is_service_account")
    search_fields = ("username", "email", "first_name", "last_name", "oidc_subject")
    fieldsets = (
        *(UserAdmin.fieldsets or ()),
        ("Identity (issuer, subject), fixed for the person", {"fields": ("oidc_issuer", "oidc_subject")}),
        ("Service account (API tokens only, no login)", {"fields": ("is_service_account",)}),
    )

    def save_model(self, request: HttpRequest, obj: User, form: ModelForm, change: bool) -> None:
        """Save, and audit a new account: who may log in is as much the trail's business as who holds a key."""
        # Saved with the acting admin, so that a rename is audited as theirs (see ``User.save``).
        obj.save(actor=actor_from_request(request))
        if not change:
            # The admin runs the whole add view in one transaction: the account and its event commit together.
            record(
                actor=actor_from_request(request),
                operation=Operation.CREATE_USER,
                outcome=Outcome.SUCCESS,
                details={
                    "user": obj.get_username(),
                    "identity": list(obj.identity),
                    "superuser": obj.is_superuser,
                    "staff": obj.is_staff,
                    "via": "admin",
                },
            )

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        return (*readonly, "oidc_issuer", "oidc_subject", "last_login", "date_joined")


admin_site.register(Group, GroupAdmin)
