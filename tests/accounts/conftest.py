"""Fixtures for identity tests: the real OpenID provider, TOTP helpers, local users."""

from __future__ import annotations

from typing import Any

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.oidc_provider.fixtures import OIDCProvider

__all__ = ["OIDCProvider"]

PASSWORD = "correct horse battery staple"


def current_code(device: TOTPDevice, *, offset: int = 0) -> str:
    """The code an authenticator app would show now (``offset`` steps away)."""
    return str(totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=offset)).zfill(
        device.digits
    )


@pytest.fixture(autouse=True)
def _no_totp_throttle(settings: Any) -> None:
    # django-otp delays the next attempt after a wrong code (1 s, 2 s, ...); tests that
    # check a refusal then succeed would otherwise be timing-dependent.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


@pytest.fixture(autouse=True)
def _land_on_the_account_page(settings: Any) -> None:
    # The default landing page (LOGIN_REDIRECT_URL) belongs to the pages app; these
    # tests land on the account page so they do not depend on it.
    settings.LOGIN_REDIRECT_URL = "account"


@pytest.fixture
def local_user(db: Any) -> User:
    return User.objects.create_user("olivia", email="olivia@example.com", password=PASSWORD)


@pytest.fixture
def local_device(local_user: User) -> TOTPDevice:
    device: TOTPDevice = TOTPDevice.objects.create(user=local_user, name="phone", confirmed=True)
    return device
