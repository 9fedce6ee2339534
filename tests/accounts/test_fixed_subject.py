"""A local account's subject is fixed at creation: renaming it never makes a new person (issue 12 §8)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps as global_apps

from accounts.identity import Actor
from accounts.models import User
from audit.models import AuditEvent
from keys.services import key_create
from tests.keys.helpers import public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def _rename_in_the_admin(client: Any, user: User, new_username: str) -> Any:
    """Submit the Django admin's change form for ``user`` with everything as it is but the username."""
    return client.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {
            "username": new_username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "is_active": "on",
            "is_staff": "on" if user.is_staff else "",
            "is_superuser": "on" if user.is_superuser else "",
            "last_login_0": "",
            "last_login_1": "",
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
            "initial-date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "initial-date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        },
    )


def test_prepare_rename_in_the_admin_and_download_in_the_same_session_is_refused(people: Any, keystore: Any) -> None:
    admin = User.objects.create_superuser("admin", email="", password="admin-password-123")
    key = key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    browser = verified_client(admin)

    prepared = browser.post(
        f"/api/v1/keys/{key.pk}/prepare-download/", {"public_key": public_pem()}, content_type="application/json"
    )
    assert prepared.status_code == 200, prepared.content

    renamed = _rename_in_the_admin(browser, admin, "someone-else")
    assert renamed.status_code == 302, renamed.content.decode()[:2000]
    admin.refresh_from_db()
    assert admin.username == "someone-else"
    assert admin.identity == ("local", "admin")

    download = browser.post(f"/api/v1/keys/{key.pk}/download/", {}, content_type="application/json")
    assert download.status_code == 403
    assert download.json()["code"] == "two_person_rule"

    rename = AuditEvent.objects.filter(operation="update_user").get()
    assert (rename.actor_iss, rename.actor_sub, rename.outcome) == ("local", "admin", "success")
    assert rename.details["username"] == {"from": "admin", "to": "someone-else"}
    assert rename.details["identity"] == ["local", "admin"]


def test_a_new_account_under_a_renamed_accounts_old_name_is_another_person(db: Any) -> None:
    first = User.objects.create_user("admin", password="x-password-123")
    first.username = "admin-old"
    first.save()
    second = User.objects.create_user("admin", password="y-password-123")
    assert first.identity == ("local", "admin")
    assert second.identity[0] == "local"
    assert second.identity != first.identity
    assert Actor.for_user(second).identity != Actor.for_user(first).identity


def test_a_rename_anywhere_else_is_audited_as_the_system(db: Any) -> None:
    user = User.objects.create_user("olivia", password="x-password-123")
    user.username = "olivia2"
    user.save()
    event = AuditEvent.objects.filter(operation="update_user").get()
    assert (event.actor_iss, event.actor_sub) == ("system", "accounts")
    assert event.details["identity"] == ["local", "olivia"]
    # Saves that do not touch the username record nothing.
    user.save(update_fields=["last_login"])
    user.first_name = "Olivia"
    user.save()
    assert AuditEvent.objects.filter(operation="update_user").count() == 1


def test_the_migration_fixes_todays_username_as_the_subject_of_existing_local_accounts(db: Any) -> None:
    legacy = User.objects.create_user("legacy", password="x-password-123")
    # As the rows were before the migration: no subject for local accounts.
    User.objects.filter(pk=legacy.pk).update(oidc_issuer="", oidc_subject="")
    oidc = User.objects.create(username="ada", oidc_issuer="https://idp.example", oidc_subject="sub-ada")
    migration = importlib.import_module("accounts.migrations.0002_fixed_local_subjects")
    migration.fix_local_subjects(global_apps, None)
    legacy.refresh_from_db()
    oidc.refresh_from_db()
    assert (legacy.oidc_issuer, legacy.oidc_subject) == ("local", "legacy")
    assert oidc.identity == ("https://idp.example", "sub-ada")
