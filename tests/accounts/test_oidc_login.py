"""Browser login through a real OpenID provider (authorization code + PKCE + nonce)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from django.contrib.sessions.backends.db import SessionStore

from accounts.identity import SESSION_IDENTITY_KEY
from accounts.models import User
from byok_portal.web import SESSION_OIDC_LOGIN_KEY
from tests.oidc_provider.fixtures import OIDCProvider

pytestmark = [pytest.mark.oidc, pytest.mark.django_db(transaction=True)]


def session_of(http: requests.Session) -> SessionStore:
    return SessionStore(session_key=http.cookies["sessionid"])


def test_two_people_log_in_and_are_provisioned_by_issuer_and_subject(oidc_settings: OIDCProvider, live_server: Any):
    oidc_settings.set_claims("sub-ada", email="ada@example.com", given_name="Ada", family_name="Lovelace")
    oidc_settings.set_claims("sub-grace", email="grace@example.com", preferred_username="grace")

    ada_http = oidc_settings.browser_login(live_server.url, "sub-ada")
    grace_http = oidc_settings.browser_login(live_server.url, "sub-grace")

    ada = User.objects.get(oidc_subject="sub-ada")
    grace = User.objects.get(oidc_subject="sub-grace")
    assert (ada.oidc_issuer, grace.oidc_issuer) == (oidc_settings.issuer, oidc_settings.issuer)
    assert ada.email == "ada@example.com"
    assert ada.get_full_name() == "Ada Lovelace"
    assert grace.username == "grace"
    assert not ada.has_usable_password()
    assert ada.memberships.count() == 0
    assert session_of(ada_http)[SESSION_IDENTITY_KEY] == [oidc_settings.issuer, "sub-ada"]
    assert session_of(ada_http)[SESSION_OIDC_LOGIN_KEY] is True
    assert session_of(grace_http)[SESSION_IDENTITY_KEY] == [oidc_settings.issuer, "sub-grace"]
    page = grace_http.get(f"{live_server.url}/accounts/", timeout=10)
    assert "sub-grace" in page.text
    assert oidc_settings.issuer in page.text


def test_a_changed_email_still_matches_the_same_account(oidc_settings: OIDCProvider, live_server: Any):
    oidc_settings.set_claims("sub-mover", email="old@example.com")
    oidc_settings.browser_login(live_server.url, "sub-mover")
    first = User.objects.get(oidc_subject="sub-mover")

    oidc_settings.set_claims("sub-mover", email="new@example.com")
    oidc_settings.browser_login(live_server.url, "sub-mover")

    assert User.objects.filter(oidc_subject="sub-mover").count() == 1
    first.refresh_from_db()
    assert first.email == "new@example.com"


def test_an_email_of_an_existing_account_never_selects_it(oidc_settings: OIDCProvider, live_server: Any):
    existing = User.objects.create_user("victim", email="victim@example.com", password="x" * 16)
    oidc_settings.set_claims("sub-impostor", email="victim@example.com", preferred_username="victim")

    http = oidc_settings.browser_login(live_server.url, "sub-impostor")

    impostor = User.objects.get(oidc_subject="sub-impostor")
    assert impostor.pk != existing.pk
    assert impostor.username != "victim"
    assert session_of(http)["_auth_user_id"] == str(impostor.pk)


def test_the_creator_group_maps_to_the_creator_permission_and_is_withdrawn(
    oidc_settings: OIDCProvider, live_server: Any, settings: Any
):
    settings.OIDC_CREATOR_GROUP = "kms-creators"
    oidc_settings.set_claims("sub-creator", groups=["kms-creators", "unrelated"])
    oidc_settings.browser_login(live_server.url, "sub-creator")
    user = User.objects.get(oidc_subject="sub-creator")
    assert user.has_perm("keystores.add_keystore")
    assert list(user.groups.values_list("name", flat=True)) == ["oidc:kms-creators"]

    oidc_settings.set_claims("sub-creator", groups=["unrelated"])
    oidc_settings.browser_login(live_server.url, "sub-creator")
    user = User.objects.get(pk=user.pk)
    assert not user.has_perm("keystores.add_keystore")


def test_a_callback_with_an_unknown_state_is_refused(oidc_settings: OIDCProvider, live_server: Any):
    http = requests.Session()
    http.get(f"{live_server.url}/oidc/authenticate/", allow_redirects=False, timeout=10)

    response = http.get(
        f"{live_server.url}/oidc/callback/", params={"code": "x", "state": "forged"}, allow_redirects=False, timeout=10
    )

    assert response.status_code == 400
    assert User.objects.filter(oidc_issuer=oidc_settings.issuer).count() == 0


def test_the_authorization_request_uses_pkce_and_a_nonce(oidc_settings: OIDCProvider, live_server: Any):
    response = requests.get(f"{live_server.url}/oidc/authenticate/", allow_redirects=False, timeout=10)

    query = parse_qs(urlparse(response.headers["Location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert len(query["nonce"][0]) >= 32
    assert len(query["state"][0]) >= 32


def test_logout_ends_the_session_here_and_at_the_provider(oidc_settings: OIDCProvider, live_server: Any):
    http = oidc_settings.browser_login(live_server.url, "sub-leaver")
    csrf = http.cookies.get("csrftoken", None)
    if csrf is None:
        http.get(f"{live_server.url}/accounts/logout/", timeout=10)
        csrf = http.cookies["csrftoken"]

    response = http.post(
        f"{live_server.url}/accounts/logout/",
        data={"csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{live_server.url}/accounts/logout/"},
        allow_redirects=False,
        timeout=10,
    )

    assert response.status_code == 302
    location = urlparse(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == oidc_settings.discovery["end_session_endpoint"]
    assert "id_token_hint" in parse_qs(location.query)
    after = http.get(f"{live_server.url}/accounts/", allow_redirects=False, timeout=10)
    assert after.status_code == 302
    assert "/accounts/login/" in after.headers["Location"]


def test_oidc_login_is_404_when_oidc_is_not_configured(live_server: Any, settings: Any):
    settings.OIDC_ENABLED = False

    assert requests.get(f"{live_server.url}/oidc/authenticate/", timeout=10).status_code == 404
    assert requests.get(f"{live_server.url}/oidc/callback/?code=a&state=b", timeout=10).status_code == 404
