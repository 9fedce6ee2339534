"""List the portal's users with their identity and roles."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Prefetch

from accounts.models import User
from keystores.models import Membership


def _yes(value: bool) -> str:
    return "yes" if value else "-"


class Command(BaseCommand):
    help = "List users: (iss, sub), superuser/staff flags, creator permission and roles per keystore."

    def handle(self, *args: Any, **options: Any) -> None:
        users = User.objects.order_by("username").prefetch_related(
            Prefetch("memberships", queryset=Membership.objects.select_related("keystore").order_by("keystore__name"))
        )
        header = ("USERNAME", "ISSUER", "SUBJECT", "SUPERUSER", "STAFF", "ACTIVE", "CREATOR", "ROLES")
        rows: list[tuple[str, ...]] = [header]
        for user in users:
            iss, sub = user.identity
            roles = ", ".join(f"{m.role}@{m.keystore.name} ({m.keystore_id})" for m in user.memberships.all())
            rows.append(
                (
                    user.get_username(),
                    iss,
                    sub,
                    _yes(user.is_superuser),
                    _yes(user.is_staff),
                    _yes(user.is_active),
                    _yes(user.has_perm("keystores.add_keystore")),
                    roles or "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
