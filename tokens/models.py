"""API tokens (SPEC §13): personal or a service account's, stored only as a keyed hash."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from keystores.models import Keystore

TOKEN_PREFIX = "byok_"  # noqa: S105 - every token's public prefix, not a secret
MAX_EXPIRY_DAYS = 365


class Scope(models.TextChoices):
    READ = "read", "Read (GET only)"
    WRITE = "write", "Read and write"


class ApiToken(models.Model):
    """A bearer credential that acts as its owner (same roles, same person for the two-person rule).

    The secret is ``byok_<prefix>_<random>``, shown once at creation. The database keeps the
    ``prefix`` (to find the row) and ``digest``, HMAC-SHA-256 of the whole secret under
    ``BYOK_TOKEN_KEY`` (kept outside the database): a leaked dump reveals no token and
    cannot test guesses offline. ``keystores``, when not empty, limits the token to them;
    ``scope`` ``read`` allows safe methods only. Revocation and expiry take effect at the
    next request in every process: each request reads the row.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    # Who made it: the owner, or a superuser for a service account.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    keystores = models.ManyToManyField(Keystore, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="tokens_by_owner")]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_PREFIX}{self.prefix}_…)"

    @property
    def is_live(self) -> bool:
        """Neither revoked nor expired: the next request with it would be accepted."""
        return self.revoked_at is None and self.expires_at > timezone.now()

    @property
    def display_prefix(self) -> str:
        """What identifies the token to its owner without revealing it (as GitHub shows ``ghp_abc…``)."""
        return f"{TOKEN_PREFIX}{self.prefix}_…"
