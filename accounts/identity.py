"""Who is acting: the identity every service function takes.

The two-person rule and the audit trail both speak of the *person* behind a
request, i.e. the ``(iss, sub)`` of the ID token that authenticated it (SPEC §3),
not of the Django account — two accounts with the same subject are one person.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from accounts.models import LOCAL_ISSUER

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User

SESSION_IDENTITY_KEY = "byok_identity"
SYSTEM_ISSUER = "system"


@dataclass(frozen=True)
class TokenGrant:
    """What an API token authorises for one request (``request.auth`` of a token-authenticated call).

    The token app's authentication builds it; this layer only reads it, so that the acting
    identity stays the owner's (same roles, same person for the two-person rule) while the
    trail can say which token acted.
    """

    id: str
    name: str
    scope: str
    keystore_ids: frozenset[uuid.UUID] | None = None


@dataclass(frozen=True)
class Actor:
    """The acting identity of one request or background job."""

    iss: str
    sub: str
    display_name: str
    user: User | None = None
    source_ip: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The API token a request authenticated with, if any: the audit trail names it on every event.
    via_token: TokenGrant | None = None
    # An operator's command run without naming the person at the keyboard (:meth:`operator`): the portal's
    # identity acts, yet a person is behind it, so it may not ask for approvals — nobody could be kept
    # from approving a request of their own.
    unnamed_person: bool = False

    @property
    def identity(self) -> tuple[str, str]:
        return (self.iss, self.sub)

    @property
    def is_system(self) -> bool:
        return self.iss == SYSTEM_ISSUER

    @property
    def source_identity(self) -> str:
        """How the customer's CloudTrail names this identity (AWS SourceIdentity, made valid by the AWS layer).

        The subject, which never changes for a person (names and emails do); local
        accounts and the portal's own jobs are prefixed so they cannot pass for an
        OIDC subject. The audit trail, joined by request id, has the full ``(iss, sub)``.
        """
        if self.is_system:
            return f"byok-portal.{self.sub}"
        if self.iss == LOCAL_ISSUER:
            return f"local.{self.sub}"
        return self.sub

    @classmethod
    def for_user(cls, user: User, *, source_ip: str | None = None, request_id: str | None = None) -> Actor:
        """An actor acting under the account's own identity (local accounts, CLI, tests)."""
        iss, sub = user.identity
        return cls(
            iss=iss,
            sub=sub,
            display_name=user.display_name,
            user=user,
            source_ip=source_ip,
            request_id=request_id or uuid.uuid4().hex,
        )

    @classmethod
    def system(cls, job: str) -> Actor:
        """The portal itself, e.g. the daily cleanup run by Celery beat."""
        return cls(iss=SYSTEM_ISSUER, sub=job, display_name=f"BYOK Portal ({job})")

    @classmethod
    def operator(cls, command: str) -> Actor:
        """An operator's command acting as the portal, the person at the keyboard unnamed (see ``unnamed_person``)."""
        return cls(iss=SYSTEM_ISSUER, sub=command, display_name=f"BYOK Portal ({command})", unnamed_person=True)


def client_ip(request: HttpRequest) -> str | None:
    """The client address as seen by Django (a trusted proxy must set REMOTE_ADDR)."""
    return request.META.get("REMOTE_ADDR") or None


def actor_from_request(request: HttpRequest) -> Actor:
    """The identity behind an authenticated request.

    Bearer-token requests carry the verified claims on ``request.auth``; browser
    sessions carry the ``(iss, sub)`` of the ID token they logged in with. Anything
    else (local login) falls back to the account's own identity.
    """
    user: Any = request.user
    request_id = request.META.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
    claims = getattr(request, "auth", None)
    if isinstance(claims, TokenGrant):
        # A token acts as its owner: the account's own identity, with the token named for the trail.
        iss, sub = user.identity
        return Actor(
            iss=iss,
            sub=sub,
            display_name=user.display_name,
            user=user,
            source_ip=client_ip(request),
            request_id=request_id,
            via_token=claims,
        )
    if isinstance(claims, dict) and claims.get("iss") and claims.get("sub"):
        return Actor(
            iss=str(claims["iss"]),
            sub=str(claims["sub"]),
            display_name=user.display_name,
            user=user,
            source_ip=client_ip(request),
            request_id=request_id,
        )
    session_identity = request.session.get(SESSION_IDENTITY_KEY) if hasattr(request, "session") else None
    if session_identity:
        iss, sub = session_identity
        return Actor(
            iss=iss,
            sub=sub,
            display_name=user.display_name,
            user=user,
            source_ip=client_ip(request),
            request_id=request_id,
        )
    return Actor.for_user(user, source_ip=client_ip(request), request_id=request_id)
