"""Create the first administrator, once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.identity import Actor
from accounts.management.commands.byok_users import password_notice
from accounts.models import User
from accounts.services import create_local_user, grant_creator

ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Create the first superuser 'admin' with a random password, printed once. "
        "Does nothing if a superuser exists (never resets a password: see byok_users reset-password)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("bootstrap")
        with transaction.atomic():
            existing = User.objects.select_for_update().filter(is_superuser=True).order_by("pk").first()
            if existing is not None:
                self.stdout.write(f"admin exists ({existing.get_username()}); nothing changed.")
                return
            user, password = create_local_user(actor=actor, username=ADMIN_USERNAME, superuser=True)
            grant_creator(actor=actor, user=user)
        self.stdout.write(
            password_notice(
                ADMIN_USERNAME,
                password,
                first_line="Created the first administrator.",
                totp="you'll enrol TOTP (an authenticator app) on first login.",
            )
        )
