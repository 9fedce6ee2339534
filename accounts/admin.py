"""Users in the OTP admin site: identity fields are read-only (they come from the ID token)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest

from accounts.models import User
from byok_portal.admin import admin_site


@admin.register(User, site=admin_site)
class PortalUserAdmin(UserAdmin):
    """Django's user admin plus the OIDC identity, which only a login may set."""

    list_display = ("username", "oidc_subject", "oidc_issuer", "email", "is_staff", "is_superuser", "is_active")
    search_fields = ("username", "email", "first_name", "last_name", "oidc_subject")
    fieldsets = (
        *(UserAdmin.fieldsets or ()),
        ("OpenID Connect identity", {"fields": ("oidc_issuer", "oidc_subject")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> tuple[str, ...]:
        readonly = tuple(super().get_readonly_fields(request, obj))
        return (*readonly, "oidc_issuer", "oidc_subject", "last_login", "date_joined")


admin_site.register(Group, GroupAdmin)
