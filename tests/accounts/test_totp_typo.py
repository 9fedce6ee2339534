"""A TOTP typo costs nothing; repeated wrong codes still slow down (issue 13 §2).

The suite turns django-otp's throttle off elsewhere (``tests/accounts/conftest.py``);
here it runs with the portal's own setting, on a frozen clock moved by hand.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from byok_portal import settings as portal_settings
from tests.accounts.conftest import PASSWORD, current_code

pytestmark = pytest.mark.django_db

LOGIN, VERIFY, ACCOUNT = "/accounts/login/", "/accounts/login/verify/", "/accounts/"
# How long a person takes at the least to read a new code and type six digits.
RETYPE = dt.timedelta(seconds=0.5)


@pytest.fixture(autouse=True)
def _the_portals_throttle(settings: Any) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = portal_settings.OTP_TOTP_THROTTLE_FACTOR


def _wrong(device: TOTPDevice) -> str:
    return current_code(device, offset=7)


def test_the_right_code_typed_straight_after_a_typo_logs_in(local_device: TOTPDevice) -> None:
    client = Client()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.post(LOGIN, {"username": "olivia", "password": PASSWORD})
        typo = client.post(VERIFY, {"code": _wrong(local_device)})
        assert typo.status_code == 400
        assert "That code is not valid" in typo.content.decode()
        assert "Too many" not in typo.content.decode()

        clock.shift(RETYPE)
        response = client.post(VERIFY, {"code": current_code(local_device)})
    assert response.status_code == 302
    assert client.get(ACCOUNT).status_code == 200


def test_wrong_codes_in_a_row_still_slow_down_per_device(local_device: TOTPDevice, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 100  # only django-otp's throttle here; the pair lockout has its own tests
    client = Client()
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client.post(LOGIN, {"username": "olivia", "password": PASSWORD})
        for _ in range(6):
            assert client.post(VERIFY, {"code": _wrong(local_device)}).status_code == 400
            local_device.refresh_from_db()
            allowed, info = local_device.verify_is_allowed()
            assert not allowed
            clock.move_to(info["locked_until"])
        # A seventh wrong code: the next one is not even checked for 0.25 s * 2**6 = 16 s.
        client.post(VERIFY, {"code": _wrong(local_device)})
        clock.shift(dt.timedelta(seconds=5))
        refused = client.post(VERIFY, {"code": current_code(local_device)})
        assert refused.status_code == 400
        assert "Too many wrong codes in a row. Wait 11 s" in refused.content.decode()
        assert client.get(ACCOUNT).status_code == 302

        clock.shift(dt.timedelta(seconds=12))
        assert client.post(VERIFY, {"code": current_code(local_device)}).status_code == 302
