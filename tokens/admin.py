"""Tokens in the OTP admin site: read-only (made and revoked through the pages and the API, which audit)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from byok_portal.admin import admin_site
from tokens.models import ApiToken


@admin.register(ApiToken, site=admin_site)
class ApiTokenAdmin(admin.ModelAdmin):
    """Who holds which token and when it was last used; never the secret (the portal does not have it)."""

    list_display = ("name", "owner", "display_prefix", "scope", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("scope", "owner__is_service_account")
    search_fields = ("name", "owner__username", "prefix")
    exclude = ("digest",)
    readonly_fields = [field.name for field in ApiToken._meta.fields if field.name != "digest"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False
