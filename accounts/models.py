"""People who use the portal, identified by ``(iss, sub)``: OIDC's, or a local one fixed at creation."""

from __future__ import annotations

import secrets
import uuid
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractUser
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import Signal

if TYPE_CHECKING:
    from audit.services import Actor

LOCAL_ISSUER = "local"
# Sent in a rename's transaction, with ``user``, ``actor`` and ``old_username``; ``accounts.services``
# audits it (connected in ``AccountsConfig.ready``), so the model imports no service.
user_renamed = Signal()


class User(AbstractUser):
    """A portal user.

    OIDC users are matched by the ``(issuer, subject)`` pair of their ID token, never
    by email (emails get reassigned; subjects do not). Local accounts get the issuer
    ``"local"`` and a subject fixed when the account is first saved (its username
    then, made unique) and never changed (SPEC §3): the username is a label that
    can be renamed, the subject is the person. Otherwise renaming the account that
    prepared a download would turn its holder into "someone else" for the
    two-person rule.
    """

    oidc_issuer = models.CharField(max_length=255, blank=True, default="")
    oidc_subject = models.CharField(max_length=255, blank=True, default="")
    # A non-human account (a CI job, a pipeline): no password, no login page, no OIDC; it acts
    # only through the API tokens an administrator makes for it (SPEC §13).
    is_service_account = models.BooleanField(
        default=False, help_text="Non-human: authenticates with API tokens only, never through the login pages."
    )

    # Not a column: set for one request by a credential that reaches only some keystores (an API
    # token restricted to them). ``keystores.selectors`` narrows every scoped read by it, so each
    # page, endpoint and service that starts from there honours it without knowing tokens exist.
    keystore_restriction: frozenset[uuid.UUID] | None = None

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["oidc_issuer", "oidc_subject"],
                condition=~Q(oidc_subject=""),
                name="accounts_user_unique_oidc_identity",
            )
        ]

    @property
    def identity(self) -> tuple[str, str]:
        """The account's ``(iss, sub)``; an unsaved local account has none yet and shows its username."""
        if self.oidc_subject:
            return (self.oidc_issuer, self.oidc_subject)
        return (LOCAL_ISSUER, self.get_username())

    @property
    def is_local(self) -> bool:
        return self.identity[0] == LOCAL_ISSUER

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.email or self.get_username()

    def save(self, *args: Any, actor: Actor | None = None, **kwargs: Any) -> None:
        """Save; a new local account gets its fixed subject, a rename is audited (by ``actor``, else the system)."""
        if not self.oidc_subject:
            self.oidc_issuer = LOCAL_ISSUER
            self.oidc_subject = _unused_local_subject(self.get_username())
        update_fields = kwargs.get("update_fields")
        if self.pk is None or (update_fields is not None and "username" not in update_fields):
            super().save(*args, **kwargs)  # e.g. last_login at each login: no rename possible
            return
        with transaction.atomic():
            before = User.objects.filter(pk=self.pk).values_list("username", flat=True).first()
            super().save(*args, **kwargs)
            if before is not None and before != self.get_username():
                user_renamed.send(sender=User, user=self, actor=actor, old_username=before)


def _unused_local_subject(username: str) -> str:
    """The username, unless an account (since renamed) already holds it as its subject."""
    candidate = username
    while User.objects.filter(oidc_issuer=LOCAL_ISSUER, oidc_subject=candidate).exists():
        candidate = f"{username}-{secrets.token_hex(4)}"
    return candidate
