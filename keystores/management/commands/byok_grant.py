"""Grant or revoke a role from the command line (operators).

Audited as the person named with ``--as`` (their role is checked, and under an approval
policy the request is theirs, so they cannot approve it themselves), or else as the
portal's operator identity, which may change roles only where no approval is needed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.identity import Actor
from accounts.services import grant_creator, resolve_user
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import ServiceError
from keystores.models import Membership, Role
from keystores.services import membership_remove, membership_set

ROLES = ["creator", *Role.values]


class Command(BaseCommand):
    help = (
        "Grant ROLE to USER (a username or an OIDC subject). ROLE is 'creator' (may create keystores) "
        "or admin/custodian/auditor of the keystore given with --keystore."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="username or OIDC subject")
        parser.add_argument("role", choices=ROLES)
        parser.add_argument("--keystore", help="keystore id (needed for admin, custodian, auditor)")
        parser.add_argument("--revoke", action="store_true", help="take the role away instead")
        parser.add_argument(
            "--as",
            dest="acting",
            metavar="USER",
            help="who is making the change (username or OIDC subject): needed where the keystore's approval "
            "policy covers membership changes; that person cannot approve their own request",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        role: str = options["role"]
        revoke: bool = options["revoke"]
        keystore_id: str | None = options["keystore"]
        try:
            actor = (
                Actor.for_user(resolve_user(options["acting"], active_only=True))
                if options["acting"]
                else Actor.operator("cli")
            )
            user = resolve_user(options["user"])
            if role == "creator":
                if keystore_id:
                    raise CommandError("'creator' is global: do not pass --keystore.")
                changed = grant_creator(actor=actor, user=user, revoke=revoke)
                verb = "revoked from" if revoke else "granted to"
                state = "" if changed else " (already so, nothing changed)"
                self.stdout.write(f"creator {verb} {user.get_username()}{state}.")
                return
            if not keystore_id:
                raise CommandError(f"The {role} role is per keystore: pass --keystore ID.")
            if revoke:
                held = Membership.objects.filter(keystore_id=keystore_id, user=user).values_list("role", flat=True)
                if held and held[0] != role:
                    raise CommandError(f"{user.get_username()} is {held[0]}, not {role}, of that keystore.")
                membership_remove(actor=actor, keystore_id=keystore_id, user=user)
                self.stdout.write(f"{role} revoked from {user.get_username()} in keystore {keystore_id}.")
            else:
                membership_set(actor=actor, keystore_id=keystore_id, user=user, role=Role(role))
                self.stdout.write(f"{role} granted to {user.get_username()} in keystore {keystore_id}.")
        except ApprovalPending as exc:
            # Dual control holds for the CLI too: the change is asked for, and runs once others approve it.
            self.stdout.write(f"Waits for approval (request {exc.approval_request['id']}): {exc.detail}")
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        except ValidationError as exc:
            raise CommandError(f"Keystore not found: {keystore_id!r} is not a keystore id.") from exc
