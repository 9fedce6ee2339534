"""Create the first administrator, once."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.identity import Actor
from accounts.models import User
from accounts.services import grant_creator

ADMIN_USERNAME = "admin"
LOGIN_URL = "http://127.0.0.1:8000/accounts/login/"


class Command(BaseCommand):
    help = (
        "Create the first superuser 'admin' with a random password, printed once. "
        "Does nothing if a superuser exists (never resets a password)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            existing = User.objects.select_for_update().filter(is_superuser=True).order_by("pk").first()
            if existing is not None:
                self.stdout.write(f"admin exists ({existing.get_username()}); nothing changed.")
                return
            # 20 random URL-safe characters: about 120 bits, and meets the password validators.
            password = secrets.token_urlsafe(15)
            user = User.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
            grant_creator(actor=Actor.system("bootstrap"), user=user)
        self.stdout.write(
            "\n".join(
                [
                    "Created the first administrator. This password is shown once; store it now.",
                    f"  username: {ADMIN_USERNAME}",
                    f"  password: {password}",
                    f"Log in at {LOGIN_URL} — you'll enrol TOTP (an authenticator app) on first login.",
                ]
            )
        )
