"""Local accounts: password, then TOTP (enrolled on first login); django-axes lockout; the OTP admin."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.identity import SESSION_IDENTITY_KEY, actor_from_request
from accounts.models import User
from accounts.views import PENDING_LOGIN_KEY
from byok_portal.web import SESSION_OIDC_LOGIN_KEY
from tests.accounts.conftest import PASSWORD, current_code

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
VERIFY = "/accounts/login/verify/"
ENROL = "/accounts/login/enrol/"
ACCOUNT = "/accounts/"


def password_step(client: Client, username: str = "olivia", password: str = PASSWORD, **extra: Any) -> Any:
    return client.post(LOGIN, {"username": username, "password": password, **extra})


def test_the_login_page_offers_the_local_form_and_no_oidc_button_without_oidc(client: Client, settings: Any):
    settings.OIDC_ENABLED = False
    page = client.get(LOGIN)
    assert page.status_code == 200
    assert b'name="username"' in page.content
    assert b'name="password"' in page.content
    assert b"/oidc/authenticate/" not in page.content


def test_the_login_page_offers_the_oidc_button_when_configured(client: Client, settings: Any):
    settings.OIDC_ENABLED = True
    assert b"/oidc/authenticate/" in client.get(LOGIN).content


def test_first_login_enrols_a_totp_device_and_logs_in(client: Client, local_user: User):
    response = password_step(client)
    assert response.status_code == 302
    assert response["Location"] == ENROL

    page = client.get(ENROL)
    assert page.status_code == 200
    assert b"<svg" in page.content
    secret = re.search(rb'id="totp-secret">([A-Z2-7]+)<', page.content)
    assert secret is not None
    device = TOTPDevice.objects.get(user=local_user, confirmed=False)
    assert client.get(ENROL).content.count(secret.group(1)) == 1, "reloading keeps the same secret"

    response = client.post(ENROL, {"code": current_code(device)})

    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    assert client.get(ACCOUNT).status_code == 200
    assert PENDING_LOGIN_KEY not in client.session


def test_a_wrong_enrolment_code_confirms_nothing(client: Client, local_user: User):
    password_step(client)
    client.get(ENROL)
    device = TOTPDevice.objects.get(user=local_user)

    response = client.post(ENROL, {"code": current_code(device, offset=5)})

    assert response.status_code == 400
    assert b"not valid" in response.content
    device.refresh_from_db()
    assert not device.confirmed
    assert client.get(ACCOUNT).status_code == 302


def test_a_user_with_a_device_enters_the_code_and_is_otp_verified(client: Client, local_device: TOTPDevice):
    response = password_step(client, next="/accounts/?tab=roles")
    assert response["Location"] == VERIFY

    response = client.post(VERIFY, {"code": current_code(local_device)})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/?tab=roles"
    account = client.get(ACCOUNT)
    assert account.status_code == 200
    request = account.wsgi_request
    assert request.user.is_verified()  # type: ignore[union-attr]
    assert actor_from_request(request).identity == ("local", "olivia")


def test_a_local_login_replaces_an_earlier_oidc_identity_in_the_session(client: Client, local_device: TOTPDevice):
    session = client.session
    session[SESSION_IDENTITY_KEY] = ["https://idp.example.com", "someone-else"]
    session[SESSION_OIDC_LOGIN_KEY] = True
    session.save()

    password_step(client)
    client.post(VERIFY, {"code": current_code(local_device)})

    request = client.get(ACCOUNT).wsgi_request
    assert actor_from_request(request).identity == ("local", "olivia")
    assert SESSION_OIDC_LOGIN_KEY not in client.session


def test_a_wrong_code_is_refused(client: Client, local_device: TOTPDevice):
    password_step(client)

    response = client.post(VERIFY, {"code": current_code(local_device, offset=-5)})

    assert response.status_code == 400
    assert b"not valid" in response.content
    assert client.get(ACCOUNT).status_code == 302


@pytest.mark.urls("tests.accounts.urls")
def test_the_password_alone_logs_nobody_in(client: Client, local_device: TOTPDevice):
    password_step(client)

    assert "_auth_user_id" not in client.session
    assert client.get(ACCOUNT).status_code == 302
    assert client.get("/api/test/whoami/").status_code == 401
    assert client.get("/admin/").status_code == 302


def test_an_external_next_url_is_ignored(client: Client, local_device: TOTPDevice):
    password_step(client, next="https://evil.example.com/")
    response = client.post(VERIFY, {"code": current_code(local_device)})
    assert response["Location"] == "/accounts/"


def test_the_totp_step_expires(client: Client, local_device: TOTPDevice):
    password_step(client)
    session = client.session
    session[PENDING_LOGIN_KEY] = {**session[PENDING_LOGIN_KEY], "since": 0}
    session.save()

    response = client.post(VERIFY, {"code": current_code(local_device)})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get(ACCOUNT).status_code == 302


def test_a_session_without_verified_otp_is_not_logged_in(client: Client, local_user: User):
    client.force_login(local_user)
    response = client.get(ACCOUNT)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_axes_locks_out_after_the_failure_limit(client: Client, local_device: TOTPDevice, settings: Any):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert password_step(client, password="wrong password").status_code == 400

    assert password_step(client, password="wrong password").status_code == 429
    assert password_step(client).status_code == 429, "the right password does not help once locked out"


def test_wrong_totp_codes_count_towards_the_lockout(client: Client, local_device: TOTPDevice, settings: Any):
    password_step(client)
    statuses = [
        client.post(VERIFY, {"code": current_code(local_device, offset=7)}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses[-1] == 429
    assert client.post(VERIFY, {"code": current_code(local_device)}).status_code == 429
    assert client.get(ACCOUNT).status_code == 302


def test_local_login_turned_off_refuses(client: Client, local_device: TOTPDevice, settings: Any):
    settings.BYOK_LOCAL_LOGIN = False

    assert b'name="password"' not in client.get(LOGIN).content
    assert password_step(client).status_code == 404
    assert client.post(VERIFY, {"code": current_code(local_device)}).status_code == 404
    assert client.get(ENROL).status_code == 404
    assert "_auth_user_id" not in client.session


def test_logout_needs_a_post(client: Client, local_device: TOTPDevice):
    password_step(client)
    client.post(VERIFY, {"code": current_code(local_device)})

    assert client.get("/accounts/logout/").status_code == 200
    assert client.get(ACCOUNT).status_code == 200
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get(ACCOUNT).status_code == 302


class TestAdmin:
    @pytest.fixture
    def staff(self, local_user: User, local_device: TOTPDevice) -> User:
        local_user.is_staff = local_user.is_superuser = True
        local_user.save()
        return local_user

    def test_staff_with_a_verified_device_get_the_admin(self, client: Client, staff: User, local_device: TOTPDevice):
        password_step(client)
        client.post(VERIFY, {"code": current_code(local_device)})

        assert client.get("/admin/").status_code == 200
        page = client.get(f"/admin/accounts/user/{staff.pk}/change/")
        assert page.status_code == 200
        assert b'name="oidc_subject"' not in page.content, "the OIDC identity is read-only"

    def test_staff_without_a_verified_device_do_not(self, client: Client, staff: User):
        client.force_login(staff)
        response = client.get("/admin/")
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]

    def test_verified_non_staff_do_not(self, client: Client, local_device: TOTPDevice):
        password_step(client)
        client.post(VERIFY, {"code": current_code(local_device)})
        response = client.get("/admin/")
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
