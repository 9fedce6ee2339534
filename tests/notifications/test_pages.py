"""The notification pages: webhooks for keystore admins only, each person's email preferences."""

from __future__ import annotations

from typing import Any

import pytest

from notifications.events import SUBSCRIBABLE, EventType
from notifications.models import EmailPreference, Webhook
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def page(keystore: Any) -> str:
    return f"/notifications/keystores/{keystore.pk}/webhooks/"


def test_only_admins_see_the_webhooks_page(people: Any, keystore: Any) -> None:
    assert verified_client(people.alice).get(page(keystore)).status_code == 200
    assert verified_client(people.bob).get(page(keystore)).status_code == 403
    assert verified_client(people.eve).get(page(keystore)).status_code == 404
    refused = verified_client(people.bob).post(page(keystore), {"action": "create", "url": "https://h.example.com/"})
    assert refused.status_code == 403
    assert not Webhook.objects.exists()


def test_a_bad_url_is_named_next_to_the_form_and_nothing_is_added(people: Any, keystore: Any, settings: Any) -> None:
    settings.BYOK_WEBHOOK_ALLOW_HTTP = False

    response = verified_client(people.alice).post(page(keystore), {"action": "create", "url": "http://h.example.com/"})

    assert response.status_code == 200
    assert "url: Enter an https:// URL." in response.content.decode()
    assert 'value="http://h.example.com/"' in response.content.decode()
    assert not Webhook.objects.exists()


def test_the_secret_is_on_the_creation_page_only(people: Any, keystore: Any) -> None:
    client = verified_client(people.alice)

    created = client.post(page(keystore), {"action": "create", "url": "https://h.example.com/", "events": []})
    secret = created.context["new_secret"]

    assert secret in created.content.decode()
    assert secret not in client.get(page(keystore)).content.decode()
    assert "https://h.example.com/" in client.get(page(keystore)).content.decode()


def test_a_member_chooses_the_events_each_keystore_emails_them(people: Any, keystore: Any) -> None:
    client = verified_client(people.dan)
    wanted = [str(EventType.KEY_DELETED), str(EventType.OPERATION_FAILED)]

    assert client.post("/notifications/preferences/", {f"events-{keystore.pk}": wanted}).status_code == 302

    muted = EmailPreference.objects.get(user=people.dan, keystore=keystore).muted
    assert sorted(muted) == sorted(str(kind) for kind in SUBSCRIBABLE if str(kind) not in wanted)
    html = client.get("/notifications/preferences/").content.decode()
    assert f'name="events-{keystore.pk}" value="key.deleted" checked' in html
    assert f'name="events-{keystore.pk}" value="key.expiry_warning">' in html


def test_a_url_into_the_portals_network_is_refused_on_the_page_with_the_reason(
    people: Any, keystore: Any, settings: Any
) -> None:
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = []

    response = verified_client(people.alice).post(
        page(keystore), {"action": "create", "url": "http://169.254.169.254/latest/meta-data/"}
    )

    assert response.status_code == 200
    assert "169.254.169.254 is the cloud instance metadata service; webhooks never go there." in (
        response.content.decode()
    )
    assert not Webhook.objects.exists()
