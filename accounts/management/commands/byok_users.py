"""Operators' user commands: list users, create a local user, reset a local user's password.

    manage.py byok_users [list]
    manage.py byok_users create USERNAME [--email EMAIL] [--superuser]
    manage.py byok_users create USERNAME --service     (a service account: API tokens only, no password)
    manage.py byok_users reset-password USERNAME [--reset-totp]

New passwords are random and printed once; the account enrols TOTP at its first
login (as the administrator ``byok_bootstrap`` creates does). Changes are audited
as the system actor ``cli``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.identity import Actor
from accounts.models import User
from accounts.services import create_local_user, create_service_account, reset_local_password, resolve_user
from byok_portal.errors import ServiceError

LOGIN_URL = "http://127.0.0.1:8000/accounts/login/"


def _yes(value: bool) -> str:
    return "yes" if value else "-"


def password_notice(username: str, password: str, *, first_line: str, totp: str) -> str:
    """What an operator passes on to the account's owner (shared with byok_bootstrap)."""
    return "\n".join(
        [
            f"{first_line} This password is shown once; pass it on safely now.",
            f"  username: {username}",
            f"  password: {password}",
            f"Log in at {LOGIN_URL} (or this portal's own address) — {totp}",
        ]
    )


class Command(BaseCommand):
    help = (
        "Users: 'list' (the default) shows (iss, sub), flags, creator permission and roles per keystore; "
        "'create USERNAME' makes a local user; 'reset-password USERNAME' gives one a new password."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="{list,create,reset-password}")
        actions.add_parser("list", help="list users (the default)")
        create = actions.add_parser("create", help="create a local user; prints its password once")
        create.add_argument("username")
        create.add_argument("--email", default="")
        create.add_argument("--superuser", action="store_true", help="also a superuser (and staff)")
        create.add_argument(
            "--service",
            action="store_true",
            help="a service account: no password, no login; it acts through API tokens an administrator makes",
        )
        reset = actions.add_parser("reset-password", help="give a local user a new password, printed once")
        reset.add_argument("username")
        reset.add_argument(
            "--reset-totp",
            action="store_true",
            help="also remove the user's TOTP device (lost phone): they enrol a new one at the next login. "
            "Without it the device stays, so the new password alone does not let anyone in.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options.get("action") or "list"
        actor = Actor.system("cli")
        try:
            if action == "create" and options["service"]:
                if options["superuser"]:
                    raise CommandError("A service account cannot be a superuser: grant it roles with byok_grant.")
                user = create_service_account(actor=actor, username=options["username"], email=options["email"])
                self.stdout.write(
                    f"Created the service account {user.get_username()} (no roles yet: see byok_grant). "
                    "It has no password; an administrator makes its API tokens on the Service accounts page, "
                    'or with POST /api/v1/tokens/ and "owner".'
                )
            elif action == "create":
                user, password = create_local_user(
                    actor=actor, username=options["username"], email=options["email"], superuser=options["superuser"]
                )
                kind = "superuser" if user.is_superuser else "user (no roles yet: see byok_grant)"
                self.stdout.write(
                    password_notice(
                        user.get_username(),
                        password,
                        first_line=f"Created the local {kind} {user.get_username()}.",
                        totp="they enrol TOTP (an authenticator app) at their first login.",
                    )
                )
            elif action == "reset-password":
                user = resolve_user(options["username"])
                password = reset_local_password(actor=actor, user=user, reset_totp=options["reset_totp"])
                totp = (
                    "their TOTP device was removed: they enrol a new one at the next login."
                    if options["reset_totp"]
                    else "with the TOTP code of their existing device (--reset-totp if it is lost)."
                )
                self.stdout.write(
                    password_notice(
                        user.get_username(),
                        password,
                        first_line=f"New password for {user.get_username()}; their sessions have ended.",
                        totp=totp,
                    )
                )
            else:
                self._list()
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc

    def _list(self) -> None:
        users = User.objects.order_by("username")
        # Roles are read through the reverse relation (accounts sits below keystores, so it names no
        # keystores model): one query for every user's roles, as the prefetch did.
        roles_of: dict[int, list[str]] = {}
        held = (
            User.objects.filter(memberships__isnull=False)
            .order_by("memberships__keystore__name", "memberships__keystore_id")
            .values_list("pk", "memberships__role", "memberships__keystore__name", "memberships__keystore_id")
        )
        for pk, role, keystore_name, keystore_id in held:
            roles_of.setdefault(pk, []).append(f"{role}@{keystore_name} ({keystore_id})")
        header = ("USERNAME", "ISSUER", "SUBJECT", "SUPERUSER", "STAFF", "ACTIVE", "CREATOR", "SERVICE", "ROLES")
        rows: list[tuple[str, ...]] = [header]
        for user in users:
            iss, sub = user.identity
            roles = ", ".join(roles_of.get(user.pk, []))
            rows.append(
                (
                    user.get_username(),
                    iss,
                    sub,
                    _yes(user.is_superuser),
                    _yes(user.is_staff),
                    _yes(user.is_active),
                    _yes(user.has_perm("keystores.add_keystore")),
                    _yes(user.is_service_account),
                    roles or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
