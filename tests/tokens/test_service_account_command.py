"""``manage.py byok_users create NAME --service``: a service account from the command line (SPEC §13)."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_a_service_account_has_no_password_and_is_listed_as_one(people: Any) -> None:
    out = StringIO()
    call_command("byok_users", "create", "ci-deploy", "--service", stdout=out)
    assert "service account ci-deploy" in out.getvalue()
    assert "password" not in out.getvalue().split("no password")[0].lower()
    robot = User.objects.get(username="ci-deploy")
    assert robot.is_service_account
    assert not robot.has_usable_password()
    assert robot.identity == ("local", "ci-deploy")
    event = AuditEvent.objects.get(operation="create_user")
    assert event.details["service_account"] is True
    listing = StringIO()
    call_command("byok_users", "list", stdout=listing)
    header, *rows = listing.getvalue().splitlines()
    assert "SERVICE" in header.split()
    column = header.split().index("SERVICE")
    assert {row.split()[0]: row.split()[column] for row in rows}["ci-deploy"] == "yes"
    assert {row.split()[0]: row.split()[column] for row in rows}["bob"] == "-"


def test_a_service_account_gets_no_password_reset_nor_superuser(people: Any) -> None:
    call_command("byok_users", "create", "robot", "--service", stdout=StringIO())
    with pytest.raises(CommandError, match="service account"):
        call_command("byok_users", "reset-password", "robot", stdout=StringIO())
    with pytest.raises(CommandError, match="cannot be a superuser"):
        call_command("byok_users", "create", "boss", "--service", "--superuser", stdout=StringIO())
