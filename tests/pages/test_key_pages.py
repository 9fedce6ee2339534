"""Key pages against the sandbox AWS: forms, the lifecycle buttons and their messages, the two-person download."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.request
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, Operation
from keys import services
from keys.lifecycle import LIFECYCLE
from keys.models import Key
from tests.keys.helpers import public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def texts(response: Any) -> list[str]:
    """The messages queued for the next page (including any not yet shown from earlier requests)."""
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders", alias="alias/orders", tags={"a": "b"}
    ).key


@pytest.fixture
def bob(people: Any) -> Client:
    return verified_client(people.bob)


def test_a_custodian_creates_a_key_and_lands_on_its_page(people: Any, keystore: Any, bob: Client) -> None:
    expires = timezone.localdate() + dt.timedelta(days=400)
    response = bob.post(
        "/keys/new/",
        {
            "keystore": keystore.pk,
            "name": "payments",
            "alias": "alias/payments",
            "tags": "app=shop\nteam = payments",
            "expires": expires.isoformat(),
        },
    )
    key = Key.objects.get(name="payments")
    assert response.status_code == 302
    assert response["Location"] == f"/keys/{key.pk}/"
    assert (key.state, key.tags, key.expires) == (KeyState.ACTIVE, {"app": "shop", "team": "payments"}, expires)
    assert any(f"KCV {key.kcv}" in text for text in texts(response))


def test_field_errors_are_shown_next_to_their_field(people: Any, keystore: Any, bob: Client) -> None:
    response = bob.post("/keys/new/", {"keystore": keystore.pk, "name": "x", "alias": "orders", "tags": "no-equals"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_tags_error"' in html
    assert "Line 1: write each tag as key=value." in html
    assert not Key.objects.filter(name="x").exists()

    response = bob.post("/keys/new/", {"keystore": keystore.pk, "name": "x", "alias": "orders"})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_alias_error"' in html
    assert 'aria-invalid="true"' in html
    assert "An alias is &#x27;alias/&#x27;" in html


def test_the_key_page_offers_only_the_allowed_actions_each_with_its_consequence(key: Key, bob: Client) -> None:
    html = bob.get(f"/keys/{key.pk}/").content.decode()
    for offered in ("deactivate", "upload", "renew", "schedule-deletion"):
        assert f'href="/keys/{key.pk}/{offered}/"' in html
    for refused in ("activate", "cancel-deletion"):
        assert f'href="/keys/{key.pk}/{refused}/"' not in html
    assert LIFECYCLE[Operation.DEACTIVATE].consequence in html
    assert 'name="pending_window_days"' in html


def test_deactivating_twice_says_the_second_time_changed_nothing(key: Key, bob: Client) -> None:
    first = bob.post(f"/keys/{key.pk}/deactivate/")
    second = bob.post(f"/keys/{key.pk}/deactivate/")
    assert first.status_code == second.status_code == 302
    assert "deactivated" in texts(first)[0]
    assert texts(second)[-1] == "Key “orders” is already inactive — nothing changed."
    assert list(AuditEvent.objects.filter(key_id=key.pk).values_list("outcome", flat=True)[:2]) == ["noop", "success"]


def test_a_refused_operation_says_why(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/cancel-deletion/")
    assert response.status_code == 302
    [text] = texts(response)
    assert text.startswith("Cancel deletion refused. Cannot cancel the deletion of a key in state ACTIVE")
    assert "PENDING_DELETION" in text


def test_an_aws_error_is_shown_with_aws_code_and_message(key: Key, bob: Client, aws_sandbox: str) -> None:
    account, region = key.keystore.aws_account_id, key.keystore.region
    purge = f"{aws_sandbox}/_sandbox/kms/{account}/{region}/keys/{key.kms_key_id}/purge"
    urllib.request.urlopen(urllib.request.Request(purge, method="POST"))  # the KMS key is gone behind our back

    response = bob.post(f"/keys/{key.pk}/deactivate/")
    assert response.status_code == 302
    [text] = texts(response)
    assert text.startswith("Deactivate failed. AWS error during DisableKey: NotFoundException: ")
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_schedule_deletion_asks_for_a_waiting_period_of_7_to_30_days(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/schedule-deletion/", {"pending_window_days": "3"})
    assert response.status_code == 400
    assert 'id="id_pending_window_days_error"' in response.content.decode()

    response = bob.post(f"/keys/{key.pk}/schedule-deletion/", {"pending_window_days": "7"})
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION
    assert key.deletion_date is not None
    assert dt.timedelta(days=6) < key.deletion_date - timezone.now() <= dt.timedelta(days=7)
    assert "scheduled" in texts(response)[0]


def test_the_confirmation_page_works_without_javascript(key: Key, bob: Client) -> None:
    response = bob.get(f"/keys/{key.pk}/renew/")
    html = response.content.decode()
    assert response.status_code == 200
    assert LIFECYCLE[Operation.RENEW].consequence in html
    assert f'action="/keys/{key.pk}/renew/"' in html


def test_renewing_leads_to_the_new_key(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/renew/", {"name": "orders v2", "expires": ""})
    new = Key.objects.get(replaces=key)
    assert response["Location"] == f"/keys/{new.pk}/"
    html = bob.get(f"/keys/{new.pk}/").content.decode()
    assert f'href="/keys/{key.pk}/"' in html  # the renewal chain


def test_the_renewal_confirmation_asks_the_new_name_and_expiry_prefilled(key: Key, bob: Client) -> None:
    # Created 100 days ago, expiring in 265: the default keeps the 365-day cryptoperiod from today.
    today = timezone.localdate()
    Key.objects.filter(pk=key.pk).update(
        created_at=timezone.now() - dt.timedelta(days=100), expires=today + dt.timedelta(days=265)
    )
    expected = (today + dt.timedelta(days=365)).isoformat()
    for page in (f"/keys/{key.pk}/renew/", f"/keys/{key.pk}/"):  # the no-JS page and the key page's dialog
        html = bob.get(page).content.decode()
        assert 'name="name" value="orders v2"' in html
        assert f'name="expires" value="{expected}"' in html


def test_a_renewal_uses_the_name_and_expiry_submitted(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/renew/", {"name": "orders 2027", "expires": "2031-12-31"})
    new = Key.objects.get(replaces=key)
    assert (new.name, new.expires) == ("orders 2027", dt.date(2031, 12, 31))
    assert "this is the new key, “orders 2027”" in texts(response)[0]


def test_a_blank_name_keeps_the_confirmation_open_with_the_error(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/renew/", {"name": "", "expires": "not a date"})
    html = response.content.decode()
    assert response.status_code == 400
    assert "This field is required." in html
    assert "Enter a valid date." in html
    assert not Key.objects.filter(replaces=key).exists()


def test_both_keys_show_the_renewal(key: Key, bob: Client) -> None:
    bob.post(f"/keys/{key.pk}/renew/", {"name": "orders v2", "expires": ""})
    new = Key.objects.get(replaces=key)
    renewal = AuditEvent.objects.get(key_id=key.pk, operation="renew", outcome="success")
    new_page = bob.get(f"/keys/{new.pk}/").content.decode()
    # The new key: replaced the old one (linked), and its activity starts with the renewal that created it.
    assert f'This key replaced <a href="/keys/{key.pk}/">orders</a>' in new_page
    assert f"<td>{renewal.seq}</td>" in new_page
    assert "No audit events of this key yet." not in new_page
    old_page = bob.get(f"/keys/{key.pk}/").content.decode()
    assert f'by <a href="/keys/{new.pk}/">orders v2</a>' in old_page  # the REPLACED banner
    assert f'Replaced by <a href="/keys/{new.pk}/">orders v2</a>' in old_page  # the renewal chain
    assert f"<td>{renewal.seq}</td>" in old_page


def test_editing_changes_what_changed(key: Key, bob: Client) -> None:
    response = bob.post(
        f"/keys/{key.pk}/edit/", {"name": "orders", "alias": "alias/orders", "tags": "a=c", "expires": ""}
    )
    key.refresh_from_db()
    assert key.tags == {"a": "c"}
    assert texts(response) == ["Key “orders” saved (tags changed)."]


def test_the_download_is_a_file_for_the_second_person_only(people: Any, key: Key, bob: Client) -> None:
    upload = SimpleUploadedFile("public.pem", public_pem().encode(), content_type="application/x-pem-file")
    response = bob.post(f"/keys/{key.pk}/prepare-download/", {"public_key_file": upload})
    assert response.status_code == 302
    assert "Download prepared" in texts(response)[0]

    refused = bob.post(f"/keys/{key.pk}/download/")
    assert refused.status_code == 302
    assert "Two-person rule" in texts(refused)[-1]

    download = verified_client(people.carol).post(f"/keys/{key.pk}/download/")
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="byok-{key.pk}-wrapped.json"'
    assert download["Content-Type"] == "application/json"
    assert "no-store" in download["Cache-Control"]
    document = json.loads(download.content)
    assert document["kcv"] == key.kcv
    assert len(base64.b64decode(document["wrapped_key_material"])) == 256  # RSA-2048 ciphertext


def test_a_bad_public_key_is_refused_next_to_the_field(key: Key, bob: Client) -> None:
    response = bob.post(f"/keys/{key.pk}/prepare-download/", {"public_key": "not a key"})
    assert response.status_code == 400
    assert 'id="id_public_key_error"' in response.content.decode()


def test_an_auditor_reads_but_cannot_act(people: Any, key: Key) -> None:
    dan = verified_client(people.dan)
    html = dan.get(f"/keys/{key.pk}/").content.decode()
    assert "read-only access" in html
    assert f'href="/keys/{key.pk}/deactivate/"' not in html
    assert dan.post(f"/keys/{key.pk}/deactivate/").status_code == 403
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_outsiders_see_nothing(people: Any, key: Key) -> None:
    eve = verified_client(people.eve)
    assert eve.get(f"/keys/{key.pk}/").status_code == 404
    assert eve.post(f"/keys/{key.pk}/deactivate/").status_code == 404
    assert "orders" not in eve.get("/keys/").content.decode()


def test_pages_need_a_completed_login(people: Any, key: Key) -> None:
    assert Client().get("/").status_code == 302
    half_logged_in = Client()
    half_logged_in.force_login(people.bob)  # no second factor
    response = half_logged_in.get(f"/keys/{key.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_key_list_filters_and_searches(people: Any, keystore: Any, key: Key, bob: Client) -> None:
    services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)
    other = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="ledger").key
    html = bob.get("/keys/?state=INACTIVE").content.decode()
    assert f"/keys/{key.pk}/" in html
    assert f"/keys/{other.pk}/" not in html
    html = bob.get("/keys/?search=ledg").content.decode()
    assert f"/keys/{other.pk}/" in html
    assert f"/keys/{key.pk}/" not in html
