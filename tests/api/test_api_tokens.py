"""API tokens through the API (SPEC §13, §16): made, used, limited, expired, revoked, audited."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from keys import services as key_services
from tests.api.conftest import assert_conforms
from tests.keys.helpers import public_pem
from tokens.models import ApiToken

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def make_token(api_as: Any, user: Any, **body: Any) -> dict[str, Any]:
    answer = api_as(user).post("/api/v1/tokens/", {"name": "ci", "scope": "write", **body}, expect=201)
    return dict(answer.json())


def test_a_token_is_shown_once_and_lets_its_owner_call_the_api(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.bob, expires_in_days=30)
    assert made["token"].startswith("byok_")
    assert made["owner"] == "bob"
    assert made["scope"] == "write"
    assert made["active"] is True
    listed = api_as(people.bob).get("/api/v1/tokens/", expect=200).json()["results"]
    assert [t["id"] for t in listed] == [made["id"]]
    assert "token" not in listed[0], "the secret is shown once, at creation"

    response = bearer(made["token"]).get("/api/v1/keystores/", REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 200, response.content
    assert [k["name"] for k in response.json()["results"]] == ["Payments"]
    token = ApiToken.objects.get(pk=made["id"])
    assert token.last_used_ip == "198.51.100.7"
    assert token.last_used_at is not None
    shown = api_as(people.bob).get("/api/v1/tokens/").json()["results"][0]
    assert shown["last_used_ip"] == "198.51.100.7"


def test_only_a_keyed_hash_is_stored(api_as: Any, people: Any, keystore: Any, settings: Any) -> None:
    """A database dump (every column of every row) does not contain the secret, nor its random part."""
    made = make_token(api_as, people.bob)
    secret = made["token"]
    random_part = secret.split("_", 2)[2]
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tokens_apitoken")
        rows = repr(cursor.fetchall())
        cursor.execute("SELECT * FROM audit_auditevent")
        rows += repr(cursor.fetchall())
    assert secret not in rows
    assert random_part not in rows
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest() not in rows, "an unkeyed hash would let a dump test guesses"
    # The stored digest is keyed: under another BYOK_TOKEN_KEY the same secret no longer verifies.
    settings.BYOK_TOKEN_KEY = "another-key"
    assert bearer(secret).get("/api/v1/keystores/").status_code == 401


def test_a_read_token_is_refused_on_writes_with_its_reason(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.bob, scope="read")
    client = bearer(made["token"])
    assert client.get("/api/v1/keys/").status_code == 200
    response = client.post("/api/v1/keys/", {"keystore": str(keystore.pk), "name": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert "read scope" in response.json()["detail"]
    assert client.delete(f"/api/v1/tokens/{made['id']}/").status_code == 403
    assert not keystore.keys.exists()


def test_a_keystore_limit_hides_every_other_keystore_and_its_keys(api_as: Any, people: Any, keystore: Any) -> None:
    from keystores.services import keystore_create
    from tests.conftest import create_sandbox_role, new_account_id

    account = new_account_id()
    other = keystore_create(
        actor=people.actor(people.alice),
        name="Cards",
        aws_account_id=account,
        region="eu-west-1",
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )
    create_sandbox_role(other)
    key = key_services.key_create(actor=people.actor(people.alice), keystore_id=other.pk, name="other").key
    made = make_token(api_as, people.alice, keystores=[str(keystore.pk)])
    assert made["keystores"] == [str(keystore.pk)]
    client = bearer(made["token"])
    assert [k["name"] for k in client.get("/api/v1/keystores/").json()["results"]] == ["Payments"]
    assert client.get(f"/api/v1/keystores/{other.pk}/").status_code == 404
    assert client.get(f"/api/v1/keys/{key.pk}/").status_code == 404
    assert client.get("/api/v1/keys/").json()["results"] == []
    assert client.post(f"/api/v1/keys/{key.pk}/deactivate/", {}, format="json").status_code == 404
    assert client.post("/api/v1/keys/", {"keystore": str(other.pk), "name": "y"}, format="json").status_code in (
        400,
        404,
    )
    assert client.get(f"/api/v1/audit/events/?keystore={other.pk}").json()["results"] == []
    # Within its keystore it works, and it cannot make keystores (they would lie outside its limit).
    created = client.post("/api/v1/keys/", {"keystore": str(keystore.pk), "name": "inside"}, format="json")
    assert created.status_code == 201, created.content
    third = new_account_id()
    body = {"name": "n", "aws_account_id": third, "region": "eu-west-1", "role_arn": f"arn:aws:iam::{third}:role/x"}
    refused = client.post("/api/v1/keystores/", body, format="json")
    assert refused.status_code == 403, refused.content
    # Nor mint an unlimited token.
    wider = client.post("/api/v1/tokens/", {"name": "wider", "scope": "write"}, format="json")
    assert wider.status_code == 400
    assert "keystores" in wider.json()


def test_a_superusers_limited_token_is_limited_too(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.root, keystores=[str(keystore.pk)])
    client = bearer(made["token"])
    assert [k["name"] for k in client.get("/api/v1/keystores/").json()["results"]] == ["Payments"]
    assert client.get("/api/v1/service-accounts/").status_code == 403


def test_an_expired_token_is_refused(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.bob, expires_in_days=1)
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=1, minutes=1)):
        response = bearer(made["token"]).get("/api/v1/keys/")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_expiry_is_at_most_a_year(api_as: Any, people: Any) -> None:
    response = api_as(people.bob).post("/api/v1/tokens/", {"name": "x", "expires_in_days": 366})
    assert response.status_code == 400
    assert "expires_in_days" in response.json()


def test_a_revoked_token_is_refused_at_the_next_request(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.bob)
    client = bearer(made["token"])
    assert client.get("/api/v1/keys/").status_code == 200
    api_as(people.bob).delete(f"/api/v1/tokens/{made['id']}/", expect=204)
    response = client.get("/api/v1/keys/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    # Someone else's token: the same 404 as no token.
    other = make_token(api_as, people.carol)
    assert api_as(people.bob).delete(f"/api/v1/tokens/{other['id']}/").status_code == 404
    assert bearer(other["token"]).get("/api/v1/keys/").status_code == 200


def test_a_wrong_or_forged_token_is_a_401_never_anonymous(api_as: Any, people: Any) -> None:
    made = make_token(api_as, people.bob)
    forged = made["token"][:-4] + ("AAAA" if not made["token"].endswith("AAAA") else "BBBB")
    for secret in (forged, "byok_nope", "byok_" + "0" * 12 + "_x"):
        response = bearer(secret).get("/api/v1/keys/")
        assert response.status_code == 401, secret
        assert_conforms("GET", "/api/v1/keys/", response)


def test_creation_revocation_and_calls_made_with_a_token_are_audited(api_as: Any, people: Any, keystore: Any) -> None:
    made = make_token(api_as, people.bob, keystores=[str(keystore.pk)])
    created = AuditEvent.objects.get(operation="create_token")
    assert created.actor_sub == "bob"
    assert created.details["name"] == "ci"
    assert created.details["keystores"] == [str(keystore.pk)]
    client = bearer(made["token"])
    key = client.post("/api/v1/keys/", {"keystore": str(keystore.pk), "name": "k"}, format="json").json()
    event = AuditEvent.objects.get(operation="create", key_id=key["id"])
    assert event.actor_sub == "bob", "a token acts as its owner"
    assert event.details["api_client"] == {"kind": "api_token", "id": made["id"], "name": "ci"}
    api_as(people.bob).delete(f"/api/v1/tokens/{made['id']}/", expect=204)
    revoked = AuditEvent.objects.get(operation="revoke_token")
    assert revoked.details["id"] == made["id"]
    # None of it carries the secret, and the chain still verifies.
    assert made["token"] not in repr(list(AuditEvent.objects.values()))
    call_command("audit_verify")


def test_a_token_cannot_bypass_the_two_person_rule(api_as: Any, people: Any, keystore: Any) -> None:
    key = key_services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key
    key_services.key_prepare_download(actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem())
    made = make_token(api_as, people.bob)
    response = bearer(made["token"]).post(f"/api/v1/keys/{key.pk}/download/", {}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "two_person_rule"
    # Carol's token, another person, may.
    carols = make_token(api_as, people.carol)
    assert bearer(carols["token"]).post(f"/api/v1/keys/{key.pk}/download/", {}, format="json").status_code == 200


def test_service_accounts_are_made_by_superusers_and_get_tokens_from_them(
    api_as: Any, people: Any, keystore: Any
) -> None:
    from keystores.models import Role
    from keystores.services import membership_set

    assert api_as(people.alice).post("/api/v1/service-accounts/", {"username": "ci"}).status_code == 403
    account = api_as(people.root).post("/api/v1/service-accounts/", {"username": "ci-deploy"}, expect=201).json()
    from accounts.models import User

    robot = User.objects.get(pk=account["id"])
    assert robot.is_service_account
    assert not robot.has_usable_password()
    membership_set(actor=people.actor(people.alice), keystore_id=keystore.pk, user=robot, role=Role.CUSTODIAN)
    # Bob may not make tokens for it; a superuser may.
    assert api_as(people.bob).post("/api/v1/tokens/", {"name": "x", "owner": robot.pk}).status_code == 404
    made = make_token(api_as, people.root, owner=robot.pk)
    assert made["owner"] == "ci-deploy"
    assert [
        t["name"] for t in api_as(people.root).get(f"/api/v1/tokens/?owner={robot.pk}", expect=200).json()["results"]
    ] == ["ci"]
    # An empty owner is a client's bug, not "my own tokens".
    assert api_as(people.root).get("/api/v1/tokens/?owner=", expect=400).json() == {
        "owner": ["This filter may not be empty."]
    }
    created = bearer(made["token"]).post("/api/v1/keys/", {"keystore": str(keystore.pk), "name": "r"}, format="json")
    assert created.status_code == 201, created.content
    listed = api_as(people.root).get("/api/v1/service-accounts/", expect=200).json()["results"]
    assert [(a["username"], [t["name"] for t in a["tokens"]]) for a in listed] == [("ci-deploy", ["ci"])]
    # It has no login: the password step refuses it even if someone gave it a password.
    robot.set_password("a-password-123-x")
    robot.save()
    page = Client().post("/accounts/login/", {"username": "ci-deploy", "password": "a-password-123-x"})
    assert page.status_code == 400
    assert "This is a service account" in page.content.decode()


def test_the_token_list_takes_a_fixed_number_of_queries(
    api_as: Any, people: Any, django_assert_max_num_queries: Any
) -> None:
    make_token(api_as, people.bob)
    api = api_as(people.bob)
    api.get("/api/v1/tokens/")
    with django_assert_max_num_queries(20) as few:
        api.get("/api/v1/tokens/", expect=200)
    # Counted now: the next request empties the connection's query log.
    one_token = len(few.captured_queries)
    for n in range(5):
        make_token(api_as, people.bob, name=f"t{n}")
    with django_assert_max_num_queries(one_token):
        assert len(api.get("/api/v1/tokens/", expect=200).json()["results"]) == 6


def test_a_token_request_reads_the_token_twice_and_writes_its_last_use_once_a_minute(
    api_as: Any, people: Any, keystore: Any, django_assert_max_num_queries: Any
) -> None:
    made = make_token(api_as, people.bob)
    client = bearer(made["token"])
    client.get("/api/v1/keystores/")
    with django_assert_max_num_queries(20) as queries:
        assert client.get("/api/v1/keystores/").status_code == 200
    on_tokens = [q["sql"] for q in queries.captured_queries if "tokens_apitoken" in q["sql"]]
    assert len(on_tokens) == 2, on_tokens  # the token with its owner, then its keystores
    assert not any(sql.startswith("UPDATE") for sql in on_tokens), "last use was written less than a minute ago"
    later_time = time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    with later_time, django_assert_max_num_queries(20) as later:
        assert client.get("/api/v1/keystores/").status_code == 200
    updates = [q["sql"] for q in later.captured_queries if q["sql"].startswith('UPDATE "tokens_apitoken"')]
    assert len(updates) == 1
