"""No cache keeps key data; an unexpected failure is audited and answered cleanly (issue 12 §13)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from keys import services
from keys.models import Key, KeyMaterial
from tests.keys.helpers import current_sealed, public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key


def _no_store(response: Any) -> bool:
    return "no-store" in response.get("Cache-Control", "")


def test_every_answer_carrying_key_data_says_no_store(api_as: Any, people: Any, key: Key) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    url = f"/api/v1/keys/{key.pk}/"
    assert _no_store(bob.get(url, expect=200))
    assert _no_store(bob.get("/api/v1/keys/", expect=200))
    assert _no_store(bob.post(f"{url}prepare-download/", {"public_key": public_pem()}, expect=200))
    assert _no_store(carol.post(f"{url}download/", expect=200))

    browser = verified_client(people.bob)
    assert _no_store(browser.get("/keys/"))
    assert _no_store(browser.get(f"/keys/{key.pk}/"))
    assert _no_store(browser.get(f"/keys/{key.pk}/prepare-download/"))
    assert _no_store(browser.get(f"/keys/{key.pk}/download/"))


def _break_the_sealed_material(key: Key) -> None:
    stored = current_sealed(key)
    assert stored is not None
    sealed = bytearray(stored)
    sealed[-1] ^= 0x01  # the GCM tag no longer matches
    KeyMaterial.objects.filter(key=key, version=1).update(material_sealed=bytes(sealed))


def test_a_sealed_blob_that_does_not_open_is_an_audited_clean_500_in_the_api(
    api_as: Any, people: Any, key: Key
) -> None:
    api_as(people.bob).post(f"/api/v1/keys/{key.pk}/prepare-download/", {"public_key": public_pem()}, expect=200)
    _break_the_sealed_material(key)

    response = api_as(people.carol).post(f"/api/v1/keys/{key.pk}/download/", expect=500)

    body = response.json()
    assert body["code"] == "server_error"
    assert set(body) == {"detail", "code", "request_id"}
    assert "InvalidTag" not in body["detail"]
    assert _no_store(response)
    event = AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").first()
    assert event is not None
    assert (event.operation, event.outcome, event.actor_sub) == ("download", "failed", "carol")
    assert body["request_id"] in event.error
    assert event.details["request_id"] == body["request_id"]
    key.refresh_from_db()
    assert key.download_prepared, "nothing was consumed"


def test_a_sealed_blob_that_does_not_open_is_audited_on_the_page_too(people: Any, key: Key) -> None:
    services.key_prepare_download(actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem())
    _break_the_sealed_material(key)
    browser = verified_client(people.carol)
    browser.raise_request_exception = False

    response = browser.post(f"/keys/{key.pk}/download/")

    assert response.status_code == 500
    event = AuditEvent.objects.filter(key_id=key.pk).order_by("-seq").first()
    assert event is not None
    assert (event.operation, event.outcome, event.reason) == ("download", "failed", "unexpected_error")


def test_an_anonymous_unexpected_error_is_audited_as_the_system(settings: Any, db: Any) -> None:
    # Proves the fallback identity: the request never authenticated.
    client = Client(raise_request_exception=False)
    settings.ROOT_URLCONF = "tests.api.boom_urls"
    assert client.get("/boom/").status_code == 500
    event = AuditEvent.objects.order_by("-seq").first()
    assert event is not None
    assert (event.operation, event.outcome, event.actor_iss) == ("unexpected_error", "failed", "system")
