"""Making, checking and revoking API tokens (SPEC §13). Every creation and revocation is audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor, TokenGrant
from accounts.models import User
from audit.services import record, record_refusal
from byok_portal.errors import NotFound, PermissionRefused
from byok_portal.vocabulary import Operation, Outcome
from keystores.models import Keystore
from keystores.selectors import is_superuser, keystores_for
from tokens.models import MAX_EXPIRY_DAYS, TOKEN_PREFIX, ApiToken, Scope

# How often a token's last use is written: every request reads the row, but writing it at each
# request would turn a busy CI job's reads into writes. A new client address is written at once.
LAST_USE_RESOLUTION = dt.timedelta(seconds=60)


class InvalidToken(Exception):
    """The presented secret is not a live token; the message is safe to show the caller."""


@dataclass(frozen=True)
class NewToken:
    """A token just made, with its secret: the only moment the secret exists outside its owner's hands."""

    token: ApiToken
    secret: str


def digest_of(secret: str) -> str:
    """HMAC-SHA-256 of the whole secret under ``BYOK_TOKEN_KEY`` (hex)."""
    key = str(settings.BYOK_TOKEN_KEY).encode()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def _new_secret() -> tuple[str, str]:
    """``(prefix, secret)``: 48 bits to find the row, 256 bits nobody can guess."""
    prefix = secrets.token_hex(6)
    return prefix, f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def _grant_of(token: ApiToken, keystore_ids: Iterable[uuid.UUID]) -> TokenGrant:
    ids = frozenset(keystore_ids)
    return TokenGrant(id=str(token.pk), name=token.name, scope=token.scope, keystore_ids=ids or None)


def authenticate(secret: str, *, ip: str | None) -> tuple[User, TokenGrant]:
    """The owner and grant of a live token, or :class:`InvalidToken`.

    One indexed read per request (no cache), so a revocation or expiry holds at the very
    next request in every process. The digests are compared in constant time.
    """
    prefix, separator, random_part = secret.removeprefix(TOKEN_PREFIX).partition("_")
    if not secret.startswith(TOKEN_PREFIX) or not prefix or not separator or not random_part:
        raise InvalidToken("Malformed API token: expected byok_<prefix>_<secret>.")
    token = ApiToken.objects.select_related("owner").filter(prefix=prefix).first()
    # The digest is computed whether or not the prefix exists, so timing says nothing either way.
    presented = digest_of(secret)
    if token is None or not hmac.compare_digest(presented, token.digest):
        raise InvalidToken("Invalid API token.")
    now = timezone.now()
    if token.revoked_at is not None:
        raise InvalidToken("This API token has been revoked.")
    if token.expires_at <= now:
        raise InvalidToken("This API token has expired.")
    if not token.owner.is_active:
        raise InvalidToken("The API token's account is disabled.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USE_RESOLUTION or token.last_used_ip != ip:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=ip)
    keystore_ids = token.keystores.values_list("pk", flat=True)
    return token.owner, _grant_of(token, keystore_ids)


def _may_manage(actor: Actor, owner: User) -> bool:
    """Owners manage their own tokens; superusers also those of service accounts (and revoke anyone's)."""
    return actor.user is not None and (
        actor.user.pk == owner.pk or (is_superuser(actor.user) and owner.is_service_account)
    )


def token_create(
    *,
    actor: Actor,
    name: str,
    scope: str,
    expires_in_days: int,
    keystore_ids: Iterable[uuid.UUID] = (),
    owner: User | None = None,
) -> NewToken:
    """A new token for ``owner`` (default: the actor's account); the secret is returned once, never stored.

    A token made by a token is never wider than the one making it: no write scope from a
    read token, no keystore outside its limit, no expiry after its own.
    """
    owner = owner or actor.user
    if owner is None or not _may_manage(actor, owner):
        refused = PermissionRefused("Only the owner, or a superuser for a service account, may make its tokens.")
        record_refusal(actor=actor, operation=Operation.CREATE_TOKEN, exc=refused, details={"owner": str(owner)})
        raise refused
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A token needs a name."})
    if scope not in Scope.values:
        raise ValidationError({"scope": f"scope must be one of {', '.join(Scope.values)}."})
    if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise ValidationError({"expires_in_days": f"expires_in_days must be 1 to {MAX_EXPIRY_DAYS}."})
    wanted = set(keystore_ids)
    # The owner's keystores, narrowed by the acting token's own limit when a token makes a token.
    reachable = keystores_for(owner).filter(pk__in=wanted)
    if actor.via_token is not None and actor.via_token.keystore_ids is not None:
        reachable = reachable.filter(pk__in=actor.via_token.keystore_ids)
    keystores = list(reachable)
    unknown = wanted - {keystore.pk for keystore in keystores}
    if unknown:
        raise ValidationError(
            {"keystores": f"Unknown keystore(s) for this account: {', '.join(sorted(map(str, unknown)))}."}
        )
    expires_at = timezone.now() + dt.timedelta(days=expires_in_days)
    _within_acting_token(actor, scope, keystores, expires_at)
    prefix, secret = _new_secret()
    with transaction.atomic():
        token = ApiToken.objects.create(
            owner=owner,
            created_by=actor.user,
            name=name,
            prefix=prefix,
            digest=digest_of(secret),
            scope=scope,
            expires_at=expires_at,
        )
        token.keystores.set(keystores)
        record(
            actor=actor,
            operation=Operation.CREATE_TOKEN,
            outcome=Outcome.SUCCESS,
            details=_described(token, keystores),
        )
    return NewToken(token=token, secret=secret)


def _within_acting_token(actor: Actor, scope: str, keystores: list[Keystore], expires_at: dt.datetime) -> None:
    grant = actor.via_token
    if grant is None:
        return
    if grant.scope != Scope.WRITE and scope == Scope.WRITE:
        raise ValidationError({"scope": "A read token cannot make a write token."})
    if grant.keystore_ids is not None and not keystores:
        raise ValidationError(
            {
                "keystores": "This token is limited to some keystores: a token it makes must be limited to "
                "some of them too."
            }
        )
    acting = ApiToken.objects.filter(pk=grant.id).values_list("expires_at", flat=True).first()
    if acting is not None and expires_at > acting:
        raise ValidationError({"expires_in_days": "A token cannot make one that outlives it."})


def _described(token: ApiToken, keystores: Iterable[Keystore]) -> dict[str, object]:
    """What the trail says about a token: never the secret, nor the digest or lookup prefix."""
    return {
        "id": str(token.pk),
        "name": token.name,
        "owner": token.owner.get_username(),
        "scope": token.scope,
        "expires_at": token.expires_at,
        "keystores": sorted(str(keystore.pk) for keystore in keystores),
    }


def token_revoke(*, actor: Actor, token_id: uuid.UUID) -> tuple[ApiToken, Outcome]:
    """Revoke a token: the next request with it, in any process, is refused. Already revoked: a no-op."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("owner").filter(pk=token_id).first()
        if token is None or not (_may_manage(actor, token.owner) or (actor.user and is_superuser(actor.user))):
            raise NotFound("Token not found.")
        if token.revoked_at is not None:
            outcome = Outcome.NOOP
        else:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            outcome = Outcome.SUCCESS
        record(
            actor=actor,
            operation=Operation.REVOKE_TOKEN,
            outcome=outcome,
            details=_described(token, token.keystores.all()),
        )
    return token, outcome
