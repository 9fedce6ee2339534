"""Key forms report every field's problems in one answer (issue 13 items 7 and 9)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from keys.models import Key
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def errors_of(page: str, field: str) -> list[str]:
    match = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", match.group(1))] if match else []


def test_a_bad_alias_and_bad_tags_are_reported_together(people: Any, keystore: Any) -> None:
    response = verified_client(people.bob).post(
        "/keys/new/",
        {"keystore": keystore.pk, "name": "orders", "alias": "orders", "tags": "aws:owner=me\nteam=pay#ments"},
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert errors_of(page, "alias") == [
        "An alias is 'alias/' followed by letters, digits, '/', '_' or '-' (at most 256 characters)."
    ]
    assert errors_of(page, "tags") == [
        "Tag key 'aws:owner': the 'aws:' prefix is reserved.",
        "Tag 'team': values are at most 256 letters, digits, spaces or _ . : / = + - @.",
    ]
    assert not Key.objects.exists()


def test_every_malformed_tag_line_is_reported(people: Any, keystore: Any) -> None:
    response = verified_client(people.bob).post(
        "/keys/new/", {"keystore": keystore.pk, "name": "orders", "tags": "app\nteam=a\nteam=b\n=x"}
    )
    assert errors_of(response.content.decode(), "tags") == [
        "Line 1: write each tag as key=value.",
        "Line 3: tag 'team' appears twice.",
        "Line 4: write each tag as key=value.",
    ]


def test_the_edit_form_reports_alias_and_tags_together(people: Any, keystore: Any) -> None:
    from keys import services

    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    response = verified_client(people.bob).post(
        f"/keys/{key.pk}/edit/", {"name": "orders", "alias": "alias/aws/x", "tags": "aws:x=1"}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert errors_of(page, "alias") == ["Aliases under 'alias/aws/' are reserved for AWS."]
    assert errors_of(page, "tags") == ["Tag key 'aws:x': the 'aws:' prefix is reserved."]


def test_the_public_key_fields_say_one_of_them_is_required(people: Any, keystore: Any) -> None:
    from keys import services

    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    page = verified_client(people.bob).get(f"/keys/{key.pk}/prepare-download/").content.decode()
    assert "(optional)" not in page
    assert "(required: paste it or upload its file)" in page


def test_the_dismiss_button_of_a_confirmation_is_not_called_cancel(people: Any, keystore: Any) -> None:
    from keys import services

    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    services.key_schedule_deletion(actor=people.actor(people.bob), key_id=key.pk, pending_window_days=7)
    bob = verified_client(people.bob)
    dialog = bob.get(f"/keys/{key.pk}/").content.decode()
    assert ">Cancel deletion</button>" in dialog
    assert "data-close>Close without changes</button>" in dialog
    assert ">Cancel</" not in dialog
    page = bob.get(f"/keys/{key.pk}/cancel-deletion/").content.decode()
    assert ">Go back without changes</a>" in page
    assert ">Cancel</" not in page


def test_the_kms_state_shows_awss_name_beside_the_portals(people: Any, keystore: Any) -> None:
    from keys import services

    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)
    bob = verified_client(people.bob)
    for url in (f"/keys/{key.pk}/", "/keys/"):
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", bob.get(url).content.decode()))
        assert "KMS: No key material EMPTY (AWS: PendingImport)" in text, url


def test_new_key_without_a_keystore_links_a_keystore_creator_to_new_keystore(people: Any) -> None:
    for user in (people.root, people.alice):
        page = verified_client(user).get("/keys/new/").content.decode()
        assert '<a class="button" href="/keystores/new/">New keystore</a>' in page
        assert "Ask a keystore admin" not in page
    page = verified_client(people.eve).get("/keys/new/").content.decode()
    assert "Ask a keystore admin for the custodian role." in page
    assert "/keystores/new/" not in page


def test_the_key_list_state_filter_says_what_no_choice_means(people: Any) -> None:
    page = verified_client(people.bob).get("/keys/").content.decode()
    assert '<option value="" selected>Any state but deleted</option>' in page
