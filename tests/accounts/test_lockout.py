"""Lockouts lock one (account, client address) pair, progressively, and never OIDC logins (issue 12 §10)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import time_machine
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

from accounts.models import User
from tests.accounts.conftest import PASSWORD
from tests.oidc_provider.fixtures import OIDCProvider

LOGIN = "/accounts/login/"
ATTACKER, OWNER = "203.0.113.7", "198.51.100.20"


def password_step(username: str, password: str, address: str) -> int:
    """One password step from a fresh browser at ``address``; the HTTP status."""
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password}).status_code


@pytest.fixture
def admin(db: Any) -> User:
    return User.objects.create_superuser("admin", email="", password=PASSWORD)


@pytest.mark.django_db
def test_wrong_passwords_lock_that_pair_only(admin: User, local_user: User, settings: Any) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert password_step("admin", "wrong password", ATTACKER) == 400
    assert password_step("admin", "wrong password", ATTACKER) == 429
    assert password_step("admin", PASSWORD, ATTACKER) == 429, "locked for the attacker's address"

    # The owner of the account, from their own address, is not locked out.
    assert password_step("admin", PASSWORD, OWNER) == 302
    # Another account from the attacker's address is not locked out either.
    assert password_step("olivia", PASSWORD, ATTACKER) == 302


@pytest.mark.django_db
def test_each_failure_after_a_lock_locks_again_for_twice_as_long(admin: User, settings: Any) -> None:
    settings.AXES_COOLOFF_MINUTES = 15
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(settings.AXES_FAILURE_LIMIT):
            password_step("admin", "wrong password", ATTACKER)
        clock.shift(dt.timedelta(minutes=14))
        assert password_step("admin", PASSWORD, ATTACKER) == 429
        clock.shift(dt.timedelta(minutes=2))
        assert password_step("admin", PASSWORD, ATTACKER) == 302, "the first lock lasts 15 minutes"

        assert password_step("admin", "wrong password", ATTACKER) == 429, "one more failure locks at once"
        clock.shift(dt.timedelta(minutes=29))
        assert password_step("admin", PASSWORD, ATTACKER) == 429
        clock.shift(dt.timedelta(minutes=2))
        assert password_step("admin", PASSWORD, ATTACKER) == 302, "the second lock lasts 30 minutes"

        # Attempts while locked neither count nor extend the lock.
        assert password_step("admin", "wrong password", ATTACKER) == 429
        failures = AccessAttempt.objects.get(username="admin", ip_address=ATTACKER).failures_since_start
        assert password_step("admin", "wrong password", ATTACKER) == 429
        assert AccessAttempt.objects.get(username="admin").failures_since_start == failures

        # A day of quiet forgets the pair.
        clock.shift(dt.timedelta(hours=25))
        assert password_step("admin", "wrong password", ATTACKER) == 400
        assert AccessAttempt.objects.get(username="admin").failures_since_start == 1


def _failed_callback(http: requests.Session, portal: str) -> int:
    """Start the code flow, then come back with a code the provider never issued."""
    start = http.get(f"{portal}/oidc/authenticate/", allow_redirects=False, timeout=10)
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    callback = http.get(
        f"{portal}/oidc/callback/", params={"code": "not-a-code", "state": state}, allow_redirects=False, timeout=10
    )
    return callback.status_code


@pytest.mark.oidc
@pytest.mark.django_db(transaction=True)
def test_failed_oidc_callbacks_do_not_block_a_valid_oidc_login(
    oidc_settings: OIDCProvider, live_server: Any, settings: Any
) -> None:
    http = requests.Session()
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        assert _failed_callback(http, live_server.url) == 302  # back to the login page, ?error=oidc
    assert not AccessAttempt.objects.exists()

    oidc_settings.set_claims("sub-ada", email="ada@example.com")
    # A new browser from the same address (axes would count by address: both are 127.0.0.1).
    oidc_settings.browser_login(live_server.url, "sub-ada")
    assert User.objects.filter(oidc_subject="sub-ada").exists()
