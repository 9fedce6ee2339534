"""The OTP admin site: keys without material, state changes only through the service functions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from audit.models import AuditEvent
from byok_portal.admin import admin_site
from byok_portal.vocabulary import KeyState
from keys import services
from keys.models import Key
from tests.web import verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key


def test_the_key_page_in_the_admin_shows_no_material_and_no_state_field(people: Any, key: Key) -> None:
    html = verified_client(people.root).get(f"/admin/keys/key/{key.pk}/change/").content.decode()
    assert "material_sealed" not in html
    assert "download_public_key" not in html
    assert 'name="state"' not in html
    assert 'name="name"' in html


def test_state_changes_are_admin_actions_calling_the_services(people: Any, key: Key) -> None:
    root = verified_client(people.root)
    response = root.post("/admin/keys/key/", {"action": "run_deactivate", "_selected_action": [str(key.pk)]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.state == KeyState.INACTIVE
    event = AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").first()
    assert event is not None
    assert (event.operation, event.outcome, event.actor_sub) == ("deactivate", "success", "root")

    response = root.post("/admin/keys/key/", {"action": "run_cancel_deletion", "_selected_action": [str(key.pk)]})
    refusal = "Cannot cancel the deletion of a key in state INACTIVE"
    assert any(refusal in str(m) for m in get_messages(response.wsgi_request))


def test_periodic_task_schedules_are_on_the_otp_admin_site() -> None:
    for model in (PeriodicTask, IntervalSchedule, CrontabSchedule):
        assert admin_site.is_registered(model)


def test_the_admin_needs_a_verified_second_factor(people: Any) -> None:
    from django.test import Client

    client = Client()
    client.force_login(people.root)
    response = client.get("/admin/keys/key/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_an_admin_action_that_changes_nothing_says_so(people: Any, key: Key) -> None:
    """The admin learns "no-op" from what the service returns, as the pages do (no reading back of the trail)."""
    root = verified_client(people.root)
    selected = {"action": "run_deactivate", "_selected_action": [str(key.pk)]}
    first = [str(m) for m in get_messages(root.post("/admin/keys/key/", selected).wsgi_request)]
    assert first == ["Deactivate orders: done."]
    second = [str(m) for m in get_messages(root.post("/admin/keys/key/", selected).wsgi_request)]
    # The first message is still queued (no page was shown in between); the second run's is last.
    assert second == [*first, "orders: already inactive — nothing changed."]
    outcomes = list(AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").values_list("outcome", flat=True)[:2])
    assert outcomes == ["noop", "success"]


def test_creating_a_user_in_the_admin_is_audited(people: Any) -> None:
    from accounts.models import User

    response = verified_client(people.root).post(
        "/admin/accounts/user/add/",
        {
            "username": "frank",
            "usable_password": "true",
            "password1": "a-long-passphrase-9",
            "password2": "a-long-passphrase-9",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert User.objects.filter(username="frank").exists()
    event = AuditEvent.objects.filter(operation="create_user").get()
    assert (event.outcome, event.actor_sub) == ("success", "root")
    assert event.details == {
        "user": "frank",
        "identity": ["local", "frank"],
        "superuser": False,
        "staff": False,
        "via": "admin",
    }
