"""``byok_users create`` / ``reset-password``, and the operator commands in a ``make run`` checkout (issue 13 §3)."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.models import AuditEvent
from byok_portal import devenv

REPO = Path(__file__).resolve().parents[2]


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in output.splitlines() if "password:" in line)


@pytest.mark.django_db
class TestCreate:
    def test_it_creates_a_local_user_who_enrols_totp_at_first_login(self) -> None:
        output = run("byok_users", "create", "dora", "--email", "dora@example.com")

        dora = User.objects.get(username="dora")
        password = printed_password(output)
        assert dora.check_password(password)
        assert len(password) >= 20
        assert (dora.email, dora.is_superuser, dora.is_staff) == ("dora@example.com", False, False)
        assert dora.identity == ("local", "dora")
        assert "TOTP" in output
        assert not TOTPDevice.objects.filter(user=dora).exists()
        event = AuditEvent.objects.get(operation="create_user")
        assert (event.actor_iss, event.actor_sub, event.details["user"]) == ("system", "cli", "dora")
        assert password not in str(event.details)

        login = Client().post("/accounts/login/", {"username": "dora", "password": password})
        assert login.status_code == 302
        assert login["Location"] == "/accounts/login/enrol/"

    def test_superuser(self) -> None:
        run("byok_users", "create", "root2", "--superuser")
        assert User.objects.get(username="root2").is_superuser

    def test_an_existing_name_or_a_bad_one_is_refused(self) -> None:
        User.objects.create_user("dora", password="x-password-123")
        with pytest.raises(CommandError, match="exists already"):
            run("byok_users", "create", "Dora")
        with pytest.raises(CommandError):
            run("byok_users", "create", "no spaces please")
        with pytest.raises(CommandError):
            run("byok_users", "create", "ok", "--email", "not-an-email")

    def test_listing_still_works_bare_and_as_list(self) -> None:
        run("byok_users", "create", "dora")
        for args in (("byok_users",), ("byok_users", "list")):
            lines = run(*args).splitlines()
            assert lines[0].split()[:3] == ["USERNAME", "ISSUER", "SUBJECT"]
            assert any(line.startswith("dora ") for line in lines)


@pytest.mark.django_db
class TestResetPassword:
    @pytest.fixture
    def dora(self) -> User:
        user = User.objects.create_user("dora", password="old-password-123")
        TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
        return user

    def test_it_prints_a_new_password_and_keeps_the_totp_device(self, dora: User) -> None:
        AccessAttempt.objects.create(
            username="dora", ip_address="203.0.113.7", user_agent="x", failures_since_start=9, get_data="", post_data=""
        )
        output = run("byok_users", "reset-password", "dora")

        dora.refresh_from_db()
        assert dora.check_password(printed_password(output))
        assert not dora.check_password("old-password-123")
        assert TOTPDevice.objects.filter(user=dora).count() == 1
        assert not AccessAttempt.objects.filter(username="dora").exists()
        event = AuditEvent.objects.get(operation="update_user")
        assert (event.details["change"], event.details["totp"]) == ("new password", "kept")

    def test_reset_totp_removes_the_device_so_the_next_login_enrols(self, dora: User) -> None:
        output = run("byok_users", "reset-password", "dora", "--reset-totp")
        assert not TOTPDevice.objects.filter(user=dora).exists()
        login = Client().post("/accounts/login/", {"username": "dora", "password": printed_password(output)})
        assert login["Location"] == "/accounts/login/enrol/"

    def test_an_oidc_account_has_no_portal_password(self) -> None:
        User.objects.create(username="ada", oidc_issuer="https://idp.example", oidc_subject="sub-ada")
        with pytest.raises(CommandError, match="OpenID Connect"):
            run("byok_users", "reset-password", "ada")
        with pytest.raises(CommandError, match="No user"):
            run("byok_users", "reset-password", "nobody")


# --- a `make run` checkout, as an operator uses it: separate processes, no DJANGO_DEBUG ------------


def _manage(var_dir: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    # Only what a shell on a developer's machine has: none of the suite's settings.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(var_dir), "BYOK_VAR_DIR": str(var_dir)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env | extra_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _make_run_checkout(var_dir: Path) -> None:
    """What scripts/run.sh records, through the same code path (``python -m byok_portal.devenv write``)."""
    env = {"PATH": os.environ.get("PATH", ""), "BYOK_VAR_DIR": str(var_dir), "DJANGO_DEBUG": "true"}
    env |= {"BYOK_SANDBOX": "true", "BYOK_SANDBOX_URL": "http://127.0.0.1:4566"}
    done = subprocess.run(
        [sys.executable, "-m", "byok_portal.devenv", "write"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (var_dir / devenv.FILE_NAME).is_file()


def test_the_operator_commands_work_in_a_make_run_checkout(tmp_path: Path) -> None:
    _make_run_checkout(tmp_path)
    migrated = _manage(tmp_path, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert "development settings of `make run`" in migrated.stderr

    created = _manage(tmp_path, "byok_users", "create", "dora")
    assert created.returncode == 0, created.stderr[-3000:]
    assert "password:" in created.stdout
    listed = _manage(tmp_path, "byok_users")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert any(line.startswith("dora ") for line in listed.stdout.splitlines())
    reset = _manage(tmp_path, "byok_users", "reset-password", "dora")
    assert reset.returncode == 0, reset.stderr[-3000:]


def test_a_deployment_never_falls_back_to_the_make_run_settings(tmp_path: Path) -> None:
    _make_run_checkout(tmp_path)
    for marker in ("DJANGO_SECRET_KEY", "BYOK_KEK", "BYOK_AUDIT_KEY", "DJANGO_SETTINGS_MODULE"):
        value = "byok_portal.settings" if marker == "DJANGO_SETTINGS_MODULE" else "set-by-the-deployment"
        done = _manage(tmp_path, "byok_users", **{marker: value})
        assert done.returncode != 0
        assert "Missing production settings" in done.stderr
        assert "development settings of `make run`" not in done.stderr
    done = _manage(tmp_path, "byok_users", DJANGO_DEBUG="false")
    assert "Missing production settings" in done.stderr


def test_without_make_run_the_commands_name_the_missing_settings(tmp_path: Path) -> None:
    done = _manage(tmp_path, "byok_users")
    assert done.returncode != 0
    assert "Missing production settings" in done.stderr
    assert "make run" in done.stderr
