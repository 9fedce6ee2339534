"""People who use the portal, identified by their OpenID Connect ``(iss, sub)``."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q

LOCAL_ISSUER = "local"


class User(AbstractUser):
    """A portal user.

    OIDC users are matched by the ``(issuer, subject)`` pair of their ID token, never
    by email (emails get reassigned; subjects do not). Local accounts have no OIDC
    subject and are identified as ``("local", username)``.
    """

    oidc_issuer = models.CharField(max_length=255, blank=True, default="")
    oidc_subject = models.CharField(max_length=255, blank=True, default="")

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
        """The account's own ``(iss, sub)``: the OIDC subject, or ``("local", username)``."""
        if self.oidc_subject:
            return (self.oidc_issuer, self.oidc_subject)
        return (LOCAL_ISSUER, self.get_username())

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.email or self.get_username()
