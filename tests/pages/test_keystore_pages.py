"""Keystore pages: create with the IAM guide, the connection test with AWS's words, members."""

from __future__ import annotations

import json
from html import unescape
from typing import Any

import pytest
from django.contrib.messages import get_messages

from byok_portal import aws
from keys import services as key_services
from keystores.models import Keystore, KeystoreState, Membership, Role
from tests.web import verified_client

pytestmark = pytest.mark.django_db

ACCOUNT = "123456789012"


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_creating_a_keystore_leads_to_its_iam_guide(people: Any, aws_sandbox: str) -> None:
    alice = verified_client(people.alice)
    response = alice.post(
        "/keystores/new/",
        {
            "name": "Cards",
            "aws_account_id": ACCOUNT,
            "region": "eu-central-1",
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/byok",
        },
    )
    keystore = Keystore.objects.get(name="Cards")
    assert response["Location"] == f"/keystores/{keystore.pk}/"
    assert Membership.objects.get(keystore=keystore, user=people.alice).role == Role.ADMIN

    html = unescape(alice.get(response["Location"]).content.decode())
    trust = json.loads(html.split('<pre id="trust-policy"', 1)[1].split(">", 1)[1].split("</pre>", 1)[0])
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == keystore.external_id
    assert '"kms:KeyOrigin": "EXTERNAL"' in html
    assert 'data-copy="permissions-policy"' in html
    assert html.count(keystore.external_id) >= 3  # settings, step 2, trust policy


def test_keystore_fields_are_checked_where_they_are_typed(people: Any) -> None:
    response = verified_client(people.alice).post(
        "/keystores/new/",
        {
            "name": "Cards",
            "aws_account_id": ACCOUNT,
            "region": "eu-central-1",
            "role_arn": "arn:aws:iam::999999999999:role/x",
        },
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_role_arn_error"' in html
    assert "The role must be in account 123456789012" in html


def test_only_creators_may_create_keystores(people: Any) -> None:
    response = verified_client(people.bob).get("/keystores/new/")
    assert response.status_code == 403
    assert "keystore creator permission" in response.content.decode()


def test_a_failed_connection_test_shows_aws_words_verbatim(people: Any, keystore: Any, settings: Any) -> None:
    settings.BYOK_SANDBOX_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.BYOK_AWS_MAX_ATTEMPTS = 1
    aws.credential_cache.clear()
    alice = verified_client(people.alice)
    response = alice.post(f"/keystores/{keystore.pk}/test-connection/")
    keystore.refresh_from_db()
    assert response.status_code == 302
    assert keystore.last_check_ok is False
    [text] = texts(response)[-1:]
    assert text == f"Connection failed. {keystore.last_check_error}"
    assert "AssumeRole" in keystore.last_check_error
    html = alice.get(f"/keystores/{keystore.pk}/").content.decode()
    assert 'id="connection-error"' in html
    assert "Connection failed" in html


def test_a_good_connection_test_says_so(people: Any, keystore: Any) -> None:
    response = verified_client(people.bob).post(f"/keystores/{keystore.pk}/test-connection/")
    assert texts(response)[-1].startswith("Connection OK")


def test_admins_manage_members(people: Any, keystore: Any) -> None:
    alice = verified_client(people.alice)
    response = alice.post(f"/keystores/{keystore.pk}/members/", {"user": "eve", "role": "auditor"})
    assert texts(response)[-1] == "eve is now auditor of “Payments”."
    assert verified_client(people.eve).get(f"/keystores/{keystore.pk}/").status_code == 200

    response = alice.post(f"/keystores/{keystore.pk}/members/", {"user": "nobody", "role": "auditor"})
    assert texts(response)[-1].startswith("Changing the members refused. No active user")

    response = alice.post(f"/keystores/{keystore.pk}/members/{people.alice.pk}/remove/")
    assert "The last admin of a keystore cannot be removed." in texts(response)[-1]

    response = alice.post(f"/keystores/{keystore.pk}/members/{people.eve.pk}/remove/")
    assert "no longer has a role" in texts(response)[-1]
    assert verified_client(people.eve).get(f"/keystores/{keystore.pk}/").status_code == 404


def test_custodians_do_not_manage_members(people: Any, keystore: Any) -> None:
    bob = verified_client(people.bob)
    assert "Add a member" not in bob.get(f"/keystores/{keystore.pk}/").content.decode()
    response = bob.post(f"/keystores/{keystore.pk}/members/", {"user": "eve", "role": "admin"})
    assert "refused" in texts(response)[-1]
    assert not Membership.objects.filter(user=people.eve).exists()


def test_a_keystore_with_live_keys_is_not_deleted(people: Any, keystore: Any) -> None:
    key_services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k")
    alice = verified_client(people.alice)
    assert "not deleted yet" in alice.get(f"/keystores/{keystore.pk}/delete/").content.decode()
    response = alice.post(f"/keystores/{keystore.pk}/delete/")
    assert "Deleting the keystore refused. 1 key(s)" in texts(response)[-1]
    keystore.refresh_from_db()
    assert keystore.state == KeystoreState.ACTIVE


def test_the_keystore_list_shows_role_and_connection(people: Any, keystore: Any) -> None:
    html = verified_client(people.dan).get("/keystores/").content.decode()
    assert "Payments" in html
    assert "Auditor" in html
    assert "Not tested" in html
    assert "New keystore" not in html
