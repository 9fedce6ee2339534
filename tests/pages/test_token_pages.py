"""The API tokens page and the service accounts page (SPEC §13): made, shown once, last use, revoked."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.web import verified_client
from tokens.models import ApiToken

pytestmark = pytest.mark.django_db


def _secret(html: str) -> str:
    found = re.search(r"byok_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", html)
    assert found, "the new token is on the page"
    return found.group(0)


def test_a_token_made_on_the_page_is_shown_once_then_listed_with_its_last_use(people: Any, keystore: Any) -> None:
    client = verified_client(people.bob)
    page = client.get("/tokens/")
    assert page.status_code == 200
    assert "No tokens yet." in page.content.decode()
    made = client.post(
        "/tokens/", {"name": "deploy", "scope": "read", "expires_in_days": "30", "keystores": [str(keystore.pk)]}
    )
    assert made.status_code == 200
    assert "no-store" in made["Cache-Control"]
    html = made.content.decode()
    secret = _secret(html)
    assert "shown this once" in html
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/v1/keys/", REMOTE_ADDR="192.0.2.44").status_code == 200
    listed = client.get("/tokens/").content.decode()
    assert secret not in listed, "never shown again"
    assert secret.split("_")[1] in listed, "the prefix identifies it"
    assert "192.0.2.44" in listed
    assert "Payments" in listed
    token = ApiToken.objects.get(name="deploy")
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert "Revoked" in client.get("/tokens/").content.decode()
    assert api.get("/api/v1/keys/").status_code == 401


def test_the_form_refuses_what_the_api_refuses(people: Any) -> None:
    client = verified_client(people.bob)
    response = client.post("/tokens/", {"name": "x", "scope": "write", "expires_in_days": "400"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_someone_elses_token_cannot_be_revoked_from_the_page(people: Any) -> None:
    verified_client(people.carol).post("/tokens/", {"name": "c", "scope": "read", "expires_in_days": "3"})
    token = ApiToken.objects.get()
    verified_client(people.bob).post(f"/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is None


def test_superusers_make_service_accounts_and_their_tokens(people: Any) -> None:
    assert verified_client(people.alice).get("/tokens/service-accounts/").status_code == 403
    root = verified_client(people.root)
    assert root.post("/tokens/service-accounts/", {"username": "ci-robot"}).status_code == 302
    from accounts.models import User

    robot = User.objects.get(username="ci-robot")
    assert robot.is_service_account
    made = root.post(
        f"/tokens/service-accounts/{robot.pk}/tokens/new/",
        {"name": "pipeline", "scope": "write", "expires_in_days": "90"},
    )
    secret = _secret(made.content.decode())
    assert ApiToken.objects.get(name="pipeline").owner == robot
    listing = root.get("/tokens/service-accounts/").content.decode()
    assert "ci-robot" in listing
    assert "pipeline" in listing
    assert secret not in listing


def test_the_token_list_takes_a_fixed_number_of_queries(people: Any, django_assert_max_num_queries: Any) -> None:
    from accounts.identity import Actor
    from tokens.services import token_create

    for n in range(8):
        token_create(actor=Actor.for_user(people.bob), name=f"t{n}", scope="read", expires_in_days=5)
    client = verified_client(people.bob)
    client.get("/tokens/")
    with django_assert_max_num_queries(12) as first:
        client.get("/tokens/")
    # Counted now: the next request empties the connection's query log.
    eight_tokens = len(first.captured_queries)
    token_create(actor=Actor.for_user(people.bob), name="more", scope="read", expires_in_days=5)
    with django_assert_max_num_queries(eight_tokens):
        client.get("/tokens/")


def test_the_audit_page_names_the_token_an_event_was_made_with(people: Any, keystore: Any) -> None:
    from accounts.identity import Actor
    from tokens.services import token_create

    made = token_create(actor=Actor.for_user(people.bob), name="deploy-pipeline", scope="write", expires_in_days=5)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {made.secret}")
    created = api.post("/api/v1/keys/", {"keystore": str(keystore.pk), "name": "via-token"}, format="json")
    assert created.status_code == 201, created.content
    page = verified_client(people.bob).get("/audit/").content.decode()
    assert f"Via API token: <strong>deploy-pipeline ({made.token.pk})</strong>" in page
    assert made.secret not in page
