"""The two-person rule across identities: browser, API, and a mix of both (SPEC §3).

People log in through the real OpenID provider; the prepare/download calls go
through tiny API views (tests/accounts/urls.py) that, like the real API, pass
``actor_from_request(request)`` to ``keys.services``. The rule compares the
``(iss, sub)`` of whoever authenticated the request, never the Django account.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.sessions.backends.db import SessionStore

from accounts.identity import SESSION_IDENTITY_KEY, Actor
from accounts.models import User
from byok_portal.errors import TwoPersonRuleViolation
from keys.models import Key
from keys.services import key_create, key_download, key_prepare_download
from keystores.models import Keystore, Role
from keystores.services import membership_set
from tests.oidc_provider.fixtures import OIDCProvider

pytestmark = [
    pytest.mark.oidc,
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.accounts.urls"),
]


def public_key_pem() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Browser:
    """A logged-in browser session: POSTs carry the CSRF token like the pages' forms do."""

    def __init__(self, http: requests.Session, base: str) -> None:
        self.http, self.base = http, base
        http.get(f"{base}/accounts/logout/", timeout=10)  # a page with a form sets the CSRF cookie

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.http.post(
            f"{self.base}{path}",
            json=body or {},
            headers={"X-CSRFToken": str(self.http.cookies["csrftoken"])},
            timeout=10,
        )


class Api:
    """A REST client with an ID token from the provider."""

    def __init__(self, token: str, base: str) -> None:
        self.token, self.base = token, base

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(
            f"{self.base}{path}", json=body or {}, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )


@pytest.fixture
def key(keystore: Keystore, people: Any) -> Key:
    return key_create(actor=people.actor(people.alice), keystore_id=keystore.pk, name="payments-2026")


@pytest.fixture
def custodians(oidc_settings: OIDCProvider, live_server: Any, keystore: Keystore) -> dict[str, requests.Session]:
    """Ada and Grace, OIDC users, both custodians of the keystore; their logged-in browser sessions."""
    sessions = {sub: oidc_settings.browser_login(live_server.url, sub) for sub in ("sub-ada", "sub-grace")}
    for sub in sessions:
        user = User.objects.get(oidc_issuer=oidc_settings.issuer, oidc_subject=sub)
        membership_set(actor=Actor.system("test"), keystore_id=keystore.pk, user=user, role=Role.CUSTODIAN)
    return sessions


def prepare_path(key: Key) -> str:
    return f"/api/test/keys/{key.pk}/prepare/"


def download_path(key: Key) -> str:
    return f"/api/test/keys/{key.pk}/download/"


def assert_two_person_refusal(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "two_person_rule"


def test_the_preparer_cannot_download_with_a_bearer_token_after_preparing_in_the_browser(
    oidc_settings: OIDCProvider, live_server: Any, custodians: dict[str, requests.Session], key: Key
):
    ada_browser = Browser(custodians["sub-ada"], live_server.url)
    assert ada_browser.post(prepare_path(key), {"public_key": public_key_pem()}).status_code == 200

    ada_api = Api(oidc_settings.code_flow_id_token("sub-ada"), live_server.url)
    assert_two_person_refusal(ada_api.post(download_path(key)))

    grace_api = Api(oidc_settings.code_flow_id_token("sub-grace"), live_server.url)
    response = grace_api.post(download_path(key))
    assert response.status_code == 200, response.text
    assert response.json()["kcv"] == key.kcv


def test_the_preparer_cannot_download_in_the_browser_after_preparing_with_a_bearer_token(
    oidc_settings: OIDCProvider, live_server: Any, custodians: dict[str, requests.Session], key: Key
):
    ada_api = Api(oidc_settings.code_flow_id_token("sub-ada"), live_server.url)
    assert ada_api.post(prepare_path(key), {"public_key": public_key_pem()}).status_code == 200

    assert_two_person_refusal(Browser(custodians["sub-ada"], live_server.url).post(download_path(key)))
    assert Browser(custodians["sub-grace"], live_server.url).post(download_path(key)).status_code == 200


def test_the_preparer_cannot_download_in_a_second_browser_session(
    oidc_settings: OIDCProvider, live_server: Any, custodians: dict[str, requests.Session], key: Key
):
    Browser(custodians["sub-ada"], live_server.url).post(prepare_path(key), {"public_key": public_key_pem()})
    other_browser = Browser(oidc_settings.browser_login(live_server.url, "sub-ada"), live_server.url)

    assert_two_person_refusal(other_browser.post(download_path(key)))


def test_logging_in_as_someone_else_in_the_same_browser_changes_the_identity(
    oidc_settings: OIDCProvider, live_server: Any, custodians: dict[str, requests.Session], key: Key
):
    shared = custodians["sub-ada"]
    Browser(shared, live_server.url).post(prepare_path(key), {"public_key": public_key_pem()})

    # Grace logs in through the same cookie jar: Ada's identity must not survive in the session.
    oidc_settings.browser_login(live_server.url, "sub-grace", http=shared)
    session = SessionStore(session_key=shared.cookies["sessionid"])
    assert session[SESSION_IDENTITY_KEY] == [oidc_settings.issuer, "sub-grace"]
    assert Browser(shared, live_server.url).post(download_path(key)).status_code == 200


def test_the_same_subject_through_two_django_accounts_is_one_person(
    oidc_settings: OIDCProvider, keystore: Keystore, key: Key, custodians: dict[str, requests.Session]
):
    ada = User.objects.get(oidc_subject="sub-ada")
    # Another Django account (say, a local one created for the same person by an
    # operator) acting with Ada's ID token identity is still Ada.
    second_account = User.objects.create_user("ada-local", password="ada-local-password-1")
    membership_set(actor=Actor.system("test"), keystore_id=keystore.pk, user=second_account, role=Role.CUSTODIAN)
    key_prepare_download(
        actor=Actor(iss=oidc_settings.issuer, sub="sub-ada", display_name="Ada", user=ada),
        key_id=key.pk,
        public_key_pem=public_key_pem(),
    )

    with pytest.raises(TwoPersonRuleViolation):
        key_download(
            actor=Actor(iss=oidc_settings.issuer, sub="sub-ada", display_name="Ada", user=second_account),
            key_id=key.pk,
        )


def test_a_prepared_download_is_single_use(
    oidc_settings: OIDCProvider, live_server: Any, custodians: dict[str, requests.Session], key: Key
):
    Browser(custodians["sub-ada"], live_server.url).post(prepare_path(key), {"public_key": public_key_pem()})
    grace = Browser(custodians["sub-grace"], live_server.url)

    assert grace.post(download_path(key)).status_code == 200
    second = grace.post(download_path(key))
    assert second.status_code == 409, second.text
