"""Operator commands: byok_bootstrap, byok_users, byok_grant."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from audit.models import AuditEvent
from keystores.models import Keystore, Membership, Role

pytestmark = pytest.mark.django_db


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def store(db: Any) -> Keystore:
    return Keystore.objects.create(
        name="Payments", aws_account_id="123456789012", region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/x"
    )


@pytest.fixture
def bob(db: Any) -> User:
    return User.objects.create_user("bob", password="bob-password-123")


@pytest.fixture
def oidc_carol(db: Any) -> User:
    return User.objects.create(username="carol", oidc_issuer="https://idp.example.com", oidc_subject="c-123")


class TestBootstrap:
    def test_it_creates_the_first_admin_once_with_a_printed_password(self):
        output = run("byok_bootstrap")

        admin = User.objects.get(username="admin")
        password = next(line.split(":", 1)[1].strip() for line in output.splitlines() if "password:" in line)
        assert admin.is_superuser
        assert admin.is_staff
        assert admin.check_password(password)
        assert len(password) >= 20
        assert "http://127.0.0.1:8000/accounts/login/" in output
        assert "TOTP" in output
        assert admin.has_perm("keystores.add_keystore")
        assert User.objects.get(pk=admin.pk).user_permissions.filter(codename="add_keystore").exists()

    def test_it_never_resets_an_existing_admin(self):
        run("byok_bootstrap")
        before = User.objects.get(username="admin").password

        output = run("byok_bootstrap")

        assert "admin exists" in output
        assert "password:" not in output
        assert User.objects.get(username="admin").password == before
        assert User.objects.filter(is_superuser=True).count() == 1


class TestGrant:
    def test_creator_is_granted_and_revoked_and_audited(self, bob: User):
        assert "granted" in run("byok_grant", "bob", "creator")
        assert User.objects.get(pk=bob.pk).has_perm("keystores.add_keystore")
        event = AuditEvent.objects.filter(operation="grant").latest("seq")
        assert (event.actor_iss, event.actor_sub) == ("system", "cli")
        assert event.details["role"] == "creator"
        assert event.details["user"] == "bob"

        run("byok_grant", "bob", "creator", "--revoke")
        assert not User.objects.get(pk=bob.pk).has_perm("keystores.add_keystore")
        assert AuditEvent.objects.filter(operation="revoke").exists()

    def test_a_keystore_role_is_granted_by_oidc_subject(self, oidc_carol: User, store: Keystore):
        run("byok_grant", "c-123", "custodian", "--keystore", str(store.pk))

        assert Membership.objects.get(keystore=store, user=oidc_carol).role == Role.CUSTODIAN
        event = AuditEvent.objects.filter(operation="grant").latest("seq")
        assert event.keystore_id == store.pk
        assert event.actor_sub == "cli"

    def test_granting_another_role_replaces_the_old_one(self, bob: User, store: Keystore):
        run("byok_grant", "bob", "auditor", "--keystore", str(store.pk))
        run("byok_grant", "bob", "admin", "--keystore", str(store.pk))
        assert list(Membership.objects.filter(user=bob).values_list("role", flat=True)) == [Role.ADMIN]

    def test_revoking_removes_the_role(self, bob: User, store: Keystore):
        run("byok_grant", "bob", "auditor", "--keystore", str(store.pk))
        run("byok_grant", "bob", "auditor", "--keystore", str(store.pk), "--revoke")
        assert not Membership.objects.filter(user=bob).exists()

    def test_revoking_a_role_not_held_changes_nothing(self, bob: User, store: Keystore):
        run("byok_grant", "bob", "custodian", "--keystore", str(store.pk))
        with pytest.raises(CommandError, match="is custodian, not auditor"):
            run("byok_grant", "bob", "auditor", "--keystore", str(store.pk), "--revoke")
        assert Membership.objects.get(user=bob).role == Role.CUSTODIAN

    @pytest.mark.parametrize("role", ["admin", "custodian", "auditor"])
    def test_keystore_roles_need_a_keystore(self, bob: User, role: str):
        with pytest.raises(CommandError, match="--keystore"):
            run("byok_grant", "bob", role)

    def test_creator_takes_no_keystore(self, bob: User, store: Keystore):
        with pytest.raises(CommandError, match="global"):
            run("byok_grant", "bob", "creator", "--keystore", str(store.pk))

    @pytest.mark.parametrize("keystore", ["not-a-uuid", "6f1c1a52-0000-4000-8000-000000000000"])
    def test_an_unknown_keystore_is_an_error(self, bob: User, keystore: str):
        with pytest.raises(CommandError, match="not found"):
            run("byok_grant", "bob", "custodian", "--keystore", keystore)

    def test_an_unknown_user_is_an_error(self, db: Any):
        with pytest.raises(CommandError, match="No user"):
            run("byok_grant", "nobody", "creator")

    def test_a_reference_naming_two_accounts_is_refused(self, oidc_carol: User):
        User.objects.create_user("c-123", password="x" * 16)
        with pytest.raises(CommandError, match="several accounts"):
            run("byok_grant", "c-123", "creator")

    def test_an_unknown_role_is_refused(self, bob: User):
        with pytest.raises(CommandError):
            run("byok_grant", "bob", "superhero")


def test_byok_users_lists_identities_flags_and_roles(bob: User, oidc_carol: User, store: Keystore):
    run("byok_grant", "carol", "custodian", "--keystore", str(store.pk))
    run("byok_grant", "bob", "creator")

    lines = run("byok_users").splitlines()

    assert lines[0].split()[:3] == ["USERNAME", "ISSUER", "SUBJECT"]
    bob_line = next(line for line in lines if line.startswith("bob "))
    carol_line = next(line for line in lines if line.startswith("carol "))
    assert "local" in bob_line
    assert bob_line.split()[6] == "yes"
    assert "https://idp.example.com" in carol_line
    assert "c-123" in carol_line
    assert f"custodian@Payments ({store.pk})" in carol_line


def test_byok_users_lists_each_users_roles_by_keystore_name_in_one_query(
    bob: User, oidc_carol: User, store: Keystore
) -> None:
    """accounts reads roles through ``user.memberships``: one query for everyone's roles, in keystore-name order."""
    archive = Keystore.objects.create(
        name="Archive", aws_account_id="123456789012", region="eu-west-1", role_arn="arn:aws:iam::123456789012:role/y"
    )
    run("byok_grant", "carol", "custodian", "--keystore", str(store.pk))
    run("byok_grant", "carol", "auditor", "--keystore", str(archive.pk))
    run("byok_grant", "bob", "admin", "--keystore", str(store.pk))

    with CaptureQueriesContext(connection) as queries:
        lines = run("byok_users").splitlines()

    carol_line = next(line for line in lines if line.startswith("carol "))
    bob_line = next(line for line in lines if line.startswith("bob "))
    assert carol_line.endswith(f"auditor@Archive ({archive.pk}), custodian@Payments ({store.pk})")
    assert bob_line.endswith(f"admin@Payments ({store.pk})")
    assert len([q for q in queries.captured_queries if "keystores_membership" in q["sql"]]) == 1
