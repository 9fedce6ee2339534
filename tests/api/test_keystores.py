"""Contract tests of the keystore endpoints: each success and documented error, bodies checked against the schema."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from byok_portal.vocabulary import KeyState
from keys.models import Key
from tests.conftest import REGION, new_account_id

pytestmark = pytest.mark.django_db

URL = "/api/v1/keystores/"


def test_it_lists_only_the_callers_keystores(api_as: Any, people: Any, keystore: Any) -> None:
    body = api_as(people.dan).get(URL, expect=200).json()
    assert [k["id"] for k in body["results"]] == [str(keystore.pk)]
    assert body["next"] is None
    assert api_as(people.eve).get(URL, expect=200).json()["results"] == []


def test_it_filters_keystores(api_as: Any, people: Any, keystore: Any) -> None:
    api = api_as(people.alice)
    assert len(api.get(f"{URL}?search=pay", expect=200).json()["results"]) == 1
    assert api.get(f"{URL}?state=DELETED", expect=200).json()["results"] == []
    assert "state" in api.get(f"{URL}?state=nope", expect=400).json()


def test_it_refuses_a_cursor_it_did_not_issue(api_as: Any, people: Any, keystore: Any) -> None:
    assert api_as(people.alice).get(f"{URL}?cursor=bogus", expect=404).json()["code"] == "not_found"


def test_it_creates_a_keystore_with_the_creator_as_admin(api_as: Any, people: Any, aws_sandbox: str) -> None:
    account = new_account_id()
    body = {"name": "Cards", "aws_account_id": account, "region": REGION, "role_arn": f"arn:aws:iam::{account}:role/r"}
    created = api_as(people.alice).post(URL, body, expect=201).json()
    assert created["state"] == "ACTIVE"
    assert created["external_id"].startswith("byok-")
    assert created["last_connection_check"] == {"at": None, "ok": None, "error": None}


def test_it_refuses_keystore_creation_without_the_creator_permission(api_as: Any, people: Any) -> None:
    account = new_account_id()
    body = {"name": "Cards", "aws_account_id": account, "region": REGION, "role_arn": f"arn:aws:iam::{account}:role/r"}
    assert api_as(people.bob).post(URL, body, expect=403).json()["code"] == "permission_denied"


def test_it_names_invalid_and_unknown_fields(api_as: Any, people: Any) -> None:
    account = new_account_id()
    body = {
        "name": "Cards",
        "aws_account_id": account,
        "region": "mars-1",
        "role_arn": f"arn:aws:iam::{account}:role/r",
        "external_id": "mine",
    }
    errors = api_as(people.alice).post(URL, body, expect=400).json()
    assert set(errors) == {"external_id"}  # unknown fields are refused before anything else
    del body["external_id"]
    assert set(api_as(people.alice).post(URL, body, expect=400).json()) == {"region"}


def test_it_refuses_a_role_in_another_account(api_as: Any, people: Any) -> None:
    body = {
        "name": "C",
        "aws_account_id": new_account_id(),
        "region": REGION,
        "role_arn": "arn:aws:iam::123456789012:role/r",
    }
    assert "role_arn" in api_as(people.alice).post(URL, body, expect=400).json()


def test_it_reads_a_keystore(api_as: Any, people: Any, keystore: Any) -> None:
    body = api_as(people.dan).get(f"{URL}{keystore.pk}/", expect=200).json()
    assert body["aws_account_id"] == keystore.aws_account_id


def test_outsiders_never_learn_that_a_keystore_exists(api_as: Any, people: Any, keystore: Any) -> None:
    existing = api_as(people.eve).get(f"{URL}{keystore.pk}/", expect=404).json()
    missing = api_as(people.eve).get(f"{URL}{uuid.uuid4()}/", expect=404).json()
    assert existing == missing


def test_admins_edit_a_keystore(api_as: Any, people: Any, keystore: Any) -> None:
    new_arn = f"arn:aws:iam::{keystore.aws_account_id}:role/other"
    body = api_as(people.alice).patch(f"{URL}{keystore.pk}/", {"role_arn": new_arn, "auto_reupload": True}, expect=200)
    assert (body.json()["role_arn"], body.json()["auto_reupload"]) == (new_arn, True)


def test_custodians_cannot_edit_a_keystore(api_as: Any, people: Any, keystore: Any) -> None:
    assert api_as(people.bob).patch(f"{URL}{keystore.pk}/", {"name": "x"}, expect=403).json()["code"] == (
        "permission_denied"
    )


def test_account_and_region_never_change(api_as: Any, people: Any, keystore: Any) -> None:
    errors = api_as(people.alice).patch(f"{URL}{keystore.pk}/", {"region": "us-east-1"}, expect=400).json()
    assert set(errors) == {"region"}


def test_put_is_not_offered(api_as: Any, people: Any, keystore: Any) -> None:
    assert api_as(people.alice).client.put(f"{URL}{keystore.pk}/", {}, format="json").status_code == 405


def test_it_refuses_to_delete_a_keystore_with_live_keys(api_as: Any, people: Any, keystore: Any) -> None:
    Key.objects.create(keystore=keystore, name="k", state=KeyState.ACTIVE)
    body = api_as(people.alice).delete(f"{URL}{keystore.pk}/", expect=409).json()
    assert (body["code"], body["live_keys"]) == ("invalid_state", 1)


def test_it_soft_deletes_an_empty_keystore_which_stays_readable(api_as: Any, people: Any, keystore: Any) -> None:
    api = api_as(people.alice)
    assert api.delete(f"{URL}{keystore.pk}/", expect=200).json()["state"] == "DELETED"
    assert api.get(f"{URL}{keystore.pk}/", expect=200).json()["state"] == "DELETED"
    assert api.patch(f"{URL}{keystore.pk}/", {"name": "again"}, expect=409).json()["code"] == "invalid_state"


def test_it_tests_the_connection_and_remembers_the_result(api_as: Any, people: Any, keystore: Any) -> None:
    result = api_as(people.bob).post(f"{URL}{keystore.pk}/test-connection/", expect=200).json()
    assert (result["ok"], result["error"]) == (True, None)
    check = api_as(people.dan).get(f"{URL}{keystore.pk}/", expect=200).json()["last_connection_check"]
    assert (check["ok"], check["error"]) == (True, None)


def test_a_failed_connection_test_carries_awss_words(api_as: Any, people: Any, keystore: Any, settings: Any) -> None:
    from byok_portal import aws

    settings.BYOK_SANDBOX_URL = "http://127.0.0.1:9"
    aws.credential_cache.clear()
    result = api_as(people.bob).post(f"{URL}{keystore.pk}/test-connection/", expect=200).json()
    assert result["ok"] is False
    assert result["error"]


def test_auditors_cannot_test_the_connection(api_as: Any, people: Any, keystore: Any) -> None:
    api_as(people.dan).post(f"{URL}{keystore.pk}/test-connection/", expect=403)


def test_test_connection_takes_no_parameters(api_as: Any, people: Any, keystore: Any) -> None:
    assert set(api_as(people.bob).post(f"{URL}{keystore.pk}/test-connection/", {"x": 1}, expect=400).json()) == {"x"}


def test_it_gives_the_iam_policies(api_as: Any, people: Any, keystore: Any) -> None:
    body = api_as(people.dan).get(f"{URL}{keystore.pk}/iam-policy/", expect=200).json()
    condition = body["trust_policy"]["Statement"][0]["Condition"]
    assert condition == {"StringEquals": {"sts:ExternalId": keystore.external_id}}
    assert body["permissions_policy"]["Version"] == "2012-10-17"


def test_anonymous_callers_are_asked_to_authenticate(api_as: Any, keystore: Any) -> None:
    response = api_as(None).get(URL, expect=401)
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_sessions_need_a_csrf_token_to_write(people: Any, keystore: Any) -> None:
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people.alice)
    response = client.patch(f"{URL}{keystore.pk}/", {"name": "x"}, format="json")
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
