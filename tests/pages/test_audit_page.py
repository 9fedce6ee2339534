"""The audit page speaks names (issue 13 item 9): filters offer keystores and keys, grants say who got which role."""

from __future__ import annotations

import re
from typing import Any

import pytest

from keys import services
from keystores.services import keystore_create
from tests.conftest import REGION, new_account_id
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_filters_offer_the_users_keystores_and_keys_by_name(people: Any, keystore: Any) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="Orders", alias="alias/o").key
    account = new_account_id()
    elsewhere = keystore_create(
        actor=people.actor(people.root),
        name="Someone else's",
        aws_account_id=account,
        region=REGION,
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )

    page = verified_client(people.dan).get("/audit/").content.decode()

    select = r'<select name="keystore" id="id_keystore">\s*<option value="" selected>All keystores</option>'
    assert re.search(select, page)
    assert f'<option value="{keystore.pk}">Payments</option>' in page
    assert str(elsewhere.pk) not in page
    assert re.search(r'<input type="text" name="key"[^>]* list="audit-key-names"', page)
    assert f'<option value="{key.pk}">Orders · alias/o</option>' in page
    assert '<option value="" selected>Any operation</option>' in page
    assert '<option value="" selected>Any outcome</option>' in page
    assert ">Key ID<" not in page
    assert ">Keystore ID<" not in page


def test_choosing_a_keystore_by_name_filters_by_its_id(people: Any, keystore: Any) -> None:
    page = verified_client(people.dan).get("/audit/", {"keystore": str(keystore.pk)})
    assert f'<option value="{keystore.pk}" selected>Payments</option>' in page.content.decode()
    assert {event.keystore_id for event in page.context["events"]} == {keystore.pk}


def test_grant_rows_show_the_grantee_and_the_role(people: Any, keystore: Any) -> None:
    page = verified_client(people.alice).get("/audit/", {"operation": "grant"}).content.decode()
    rows = text_of(page)
    assert "User: bob (local | bob) Role: custodian" in rows
    assert "User: dan (local | dan) Role: auditor" in rows
