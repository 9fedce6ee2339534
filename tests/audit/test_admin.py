"""The Django admin shows the audit trail and never changes it."""

from __future__ import annotations

from django.test import RequestFactory

from audit.admin import AuditEventAdmin
from audit.models import AuditEvent
from byok_portal.admin import admin_site
from tests.audit.conftest import World, record_event


def test_the_admin_is_read_only_even_for_superusers(world: World) -> None:
    event = record_event(world.carol, key=world.key_a)
    request = RequestFactory().get("/admin/audit/auditevent/")
    request.user = world.root
    model_admin = admin_site._registry[AuditEvent]

    assert isinstance(model_admin, AuditEventAdmin)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    assert model_admin.has_view_permission(request, event)
    assert model_admin.get_actions(request) == {}
    assert set(model_admin.get_readonly_fields(request, event)) >= {"seq", "hash", "details", "error"}


def test_no_add_change_or_delete_permission_exists(db: None) -> None:
    from django.contrib.auth.models import Permission

    codenames = set(Permission.objects.filter(content_type__app_label="audit").values_list("codename", flat=True))

    assert "view_auditevent" in codenames
    assert not {"add_auditevent", "change_auditevent", "delete_auditevent"} & codenames
