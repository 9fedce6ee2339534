"""Writes about people: provisioning OIDC users, group mapping, the creator permission.

Keystore roles are granted by ``keystores.services.membership_set`` / ``membership_remove``.

Users are found by the ``(iss, sub)`` of a verified ID token and nothing else: an
email address or a ``preferred_username`` is display data that can be reassigned
at the provider, so it never selects an account.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.identity import Actor
from accounts.models import User
from audit.services import record
from byok_portal.errors import NotFound, ServiceError
from byok_portal.vocabulary import Operation, Outcome

CREATOR_PERMISSION = "keystores.add_keystore"
# Django groups mirroring IdP groups carry this prefix; only they are synced from claims,
# so groups and permissions an operator grants by hand are never touched by a login.
MANAGED_GROUP_PREFIX = "oidc:"

_USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
_USERNAME_MAX = 150


class AmbiguousUser(ServiceError):
    """A CLI user reference that names two different accounts."""

    status = 400
    code = "ambiguous_user"


class InvalidUserInput(ServiceError):
    """A username, email or account the requested change does not apply to."""

    status = 400
    code = "invalid"


class UserExists(ServiceError):
    status = 409
    code = "exists"


def _username_base(claims: Mapping[str, Any]) -> str:
    raw = str(claims.get("preferred_username") or str(claims.get("email") or "").split("@")[0] or "user")
    return _USERNAME_UNSAFE.sub("_", raw).strip("._-@+")[:100] or "user"


def unique_username(claims: Mapping[str, Any]) -> str:
    """A readable, unused username for a new OIDC account.

    Readable from the claims when possible; on a clash, suffixed with a digest of
    ``(iss, sub)`` so that it is stable for that person and never reuses another's
    name. The username is a label only: identity is ``(iss, sub)``.
    """
    base = _username_base(claims)
    digest = hashlib.sha256(f"{claims.get('iss')}\0{claims.get('sub')}".encode()).hexdigest()
    candidates = [base, f"{base}-{digest[:8]}", f"{base}-{digest[:16]}"]
    for candidate in candidates:
        if not User.objects.filter(username__iexact=candidate).exists():
            return candidate[:_USERNAME_MAX]
    counter = 2
    while User.objects.filter(username__iexact=f"{candidates[-1]}-{counter}").exists():
        counter += 1
    return f"{candidates[-1]}-{counter}"[:_USERNAME_MAX]


def find_oidc_user(iss: str, sub: str) -> User | None:
    return User.objects.filter(oidc_issuer=iss, oidc_subject=sub).first()


def _profile_fields(claims: Mapping[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    if isinstance(claims.get("email"), str):
        fields["email"] = claims["email"][:254]
    given, family = claims.get("given_name"), claims.get("family_name")
    if isinstance(given, str) or isinstance(family, str):
        fields["first_name"] = str(given or "")[:150]
        fields["last_name"] = str(family or "")[:150]
    elif isinstance(claims.get("name"), str):
        fields["first_name"] = claims["name"][:150]
        fields["last_name"] = ""
    return fields


def group_permission_map() -> dict[str, list[str]]:
    """IdP group name → permissions (``app_label.codename``) its members hold.

    Configured by ``OIDC_GROUP_PERMISSIONS`` (a dict), plus the shorthand
    ``OIDC_CREATOR_GROUP``, whose members get ``keystores.add_keystore`` (the
    ``creator`` permission). The group names are read from the claim named by
    ``OIDC_GROUPS_CLAIM`` (default ``groups``; a list of strings or one string).

    Each mapped IdP group is mirrored by a Django group ``oidc:<name>`` holding those
    permissions. At every login (browser or bearer) the user's ``oidc:*`` groups are
    set to exactly the mapped groups the token names — a token without the claim
    counts as "in no group", so removal at the provider takes effect at the next
    login. Groups and permissions granted by hand (``byok_grant``, the admin) are
    never changed by this. Keystore roles are not mapped from claims: they are
    granted per keystore by its admins.
    """
    mapping: dict[str, list[str]] = {
        str(group): list(perms) for group, perms in (getattr(settings, "OIDC_GROUP_PERMISSIONS", None) or {}).items()
    }
    creator_group = getattr(settings, "OIDC_CREATOR_GROUP", "")
    if creator_group:
        mapping.setdefault(creator_group, [])
        if CREATOR_PERMISSION not in mapping[creator_group]:
            mapping[creator_group].append(CREATOR_PERMISSION)
    return mapping


def _permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _claimed_groups(claims: Mapping[str, Any]) -> set[str]:
    value = claims.get(getattr(settings, "OIDC_GROUPS_CLAIM", "groups") or "groups")
    if isinstance(value, str):
        return {value}
    if isinstance(value, Iterable):
        return {str(item) for item in value}
    return set()


def sync_mapped_groups(user: User, claims: Mapping[str, Any]) -> None:
    """Put ``user`` in exactly the ``oidc:*`` groups the claims map to (see :func:`group_permission_map`)."""
    mapping = group_permission_map()
    current = set(user.groups.filter(name__startswith=MANAGED_GROUP_PREFIX).values_list("name", flat=True))
    wanted = {MANAGED_GROUP_PREFIX + name for name in _claimed_groups(claims) if name in mapping}
    if current == wanted:
        return
    for name in wanted - current:
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([_permission(p) for p in mapping[name.removeprefix(MANAGED_GROUP_PREFIX)]])
        user.groups.add(group)
    stale = current - wanted
    if stale:
        user.groups.remove(*Group.objects.filter(name__in=stale))


def update_user_from_claims(user: User, claims: Mapping[str, Any]) -> User:
    """Refresh profile fields and mapped groups from verified claims; writes only what changed."""
    fields = _profile_fields(claims)
    changed = [name for name, value in fields.items() if getattr(user, name) != value]
    for name in changed:
        setattr(user, name, fields[name])
    if changed:
        user.save(update_fields=changed)
    sync_mapped_groups(user, claims)
    return user


def user_for_claims(claims: Mapping[str, Any], *, create: bool = True) -> User | None:
    """The account of the verified claims' ``(iss, sub)``, provisioned with no roles if new.

    Two concurrent first logins of one person race on the unique ``(iss, sub)``
    constraint; the loser finds the winner's row.
    """
    iss, sub = str(claims["iss"]), str(claims["sub"])
    user = find_oidc_user(iss, sub)
    if user is not None:
        return update_user_from_claims(user, claims)
    if not create:
        return None
    try:
        with transaction.atomic():
            user = User(username=unique_username(claims), oidc_issuer=iss, oidc_subject=sub, **_profile_fields(claims))
            # OIDC accounts authenticate at the provider only, never with a portal password.
            user.set_unusable_password()
            user.save()
    except IntegrityError:
        user = find_oidc_user(iss, sub)
        if user is None:
            raise
    sync_mapped_groups(user, claims)
    return user


def resolve_user(reference: str, *, active_only: bool = False) -> User:
    """The account a CLI argument or the member form names: a username, or a subject (any issuer)."""
    users = User.objects.filter(is_active=True) if active_only else User.objects.all()
    by_username = users.filter(username=reference).first()
    by_subject = list(users.filter(oidc_subject=reference)[:2])
    matches = {u.pk: u for u in [by_username, *by_subject] if u is not None}
    if not matches:
        which = "active user" if active_only else "user"
        raise NotFound(
            f"No {which} with username or subject {reference!r}. Someone who logs in with OpenID Connect "
            "must log in once first."
        )
    if len(matches) > 1:
        raise AmbiguousUser(
            f"{reference!r} names several accounts: "
            + ", ".join(f"{u.username} ({u.identity[0]}|{u.identity[1]})" for u in matches.values())
            + ". Use the username."
        )
    return next(iter(matches.values()))


def grant_creator(*, actor: Actor, user: User, revoke: bool = False) -> bool:
    """Give (or take) the global permission to create keystores; audited. True if something changed."""
    permission = _permission(CREATOR_PERMISSION)
    with transaction.atomic():
        has_it = user.user_permissions.filter(pk=permission.pk).exists()
        changed = has_it if revoke else not has_it
        if changed and revoke:
            user.user_permissions.remove(permission)
        elif changed:
            user.user_permissions.add(permission)
        record(
            actor=actor,
            operation=Operation.REVOKE if revoke else Operation.GRANT,
            outcome=Outcome.SUCCESS if changed else Outcome.NOOP,
            details={"user": user.get_username(), "identity": list(user.identity), "role": "creator"},
        )
    return changed


def record_rename(*, actor: Actor | None, user: User, old_username: str, **signal: Any) -> None:
    """Audit a username change (``User.save``'s ``user_renamed`` signal, in the rename's transaction).

    The event says that the *label* changed and the identity did not: the two-person
    rule and the audit trail keep speaking of the same ``(iss, sub)``.
    """
    record(
        actor=actor or Actor.system("accounts"),
        operation=Operation.UPDATE_USER,
        outcome=Outcome.SUCCESS,
        details={
            "user_id": user.pk,
            "username": {"from": old_username, "to": user.get_username()},
            "identity": list(user.identity),
        },
    )


def new_one_time_password() -> str:
    """20 random URL-safe characters (about 120 bits): meets the password validators, shown once."""
    return secrets.token_urlsafe(15)


def _unused_username(username: str, email: str, *, hint: str = "") -> str:
    """``username`` stripped, if it and ``email`` are valid and no account has the name yet."""
    username = username.strip()
    try:
        User.username_validator(username)
        if email:
            validate_email(email)
    except ValidationError as exc:
        raise InvalidUserInput(" ".join(exc.messages)) from exc
    if User.objects.filter(username__iexact=username).exists():
        raise UserExists(f"A user named {username!r} exists already{hint}.")
    return username


def create_local_user(*, actor: Actor, username: str, email: str = "", superuser: bool = False) -> tuple[User, str]:
    """A local account with a random password (returned, to be shown once); audited.

    It has no TOTP device: the first login enrols one (``accounts.views.otp_enrol_view``),
    exactly like the administrator ``byok_bootstrap`` creates.
    """
    username = _unused_username(username, email, hint="; reset its password with reset-password")
    password = new_one_time_password()
    with transaction.atomic():
        if superuser:
            user = User.objects.create_superuser(username=username, email=email, password=password)
        else:
            user = User.objects.create_user(username=username, email=email, password=password)
        record(
            actor=actor,
            operation=Operation.CREATE_USER,
            outcome=Outcome.SUCCESS,
            details={"user": username, "identity": list(user.identity), "superuser": superuser},
        )
    return user, password


def create_service_account(*, actor: Actor, username: str, email: str = "") -> User:
    """A non-human account (SPEC §13): no password and no login, it acts through API tokens only; audited.

    It gets roles like anyone (``byok_grant``, the keystore pages). Its identity is the
    local one fixed at creation, so the two-person rule tells it apart from the people
    who made its tokens.
    """
    username = _unused_username(username, email)
    with transaction.atomic():
        user = User(username=username, email=email, is_service_account=True)
        user.set_unusable_password()
        user.save()
        record(
            actor=actor,
            operation=Operation.CREATE_USER,
            outcome=Outcome.SUCCESS,
            details={"user": username, "identity": list(user.identity), "service_account": True},
        )
    return user


def reset_local_password(*, actor: Actor, user: User, reset_totp: bool = False) -> str:
    """Give a local account a new random password (returned, to be shown once); audited.

    The TOTP device stays unless ``reset_totp``: a forgotten password is not a lost
    phone, and whoever receives the new password must not also get to enrol their
    own second factor. The account's failed-login counts are cleared (the operator
    is helping its owner back in) and its sessions end (Django ties a session to the
    password hash).
    """
    if user.is_service_account:
        raise InvalidUserInput(f"{user.get_username()} is a service account: it has API tokens, never a password.")
    if not user.is_local:
        raise InvalidUserInput(
            f"{user.get_username()} logs in with OpenID Connect; its password is kept by the identity provider."
        )
    password = new_one_time_password()
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        removed_devices = 0
        if reset_totp:
            removed_devices, _ = TOTPDevice.objects.filter(user=user).delete()
        AccessAttempt.objects.filter(username=user.get_username()).delete()
        record(
            actor=actor,
            operation=Operation.UPDATE_USER,
            outcome=Outcome.SUCCESS,
            details={
                "user": user.get_username(),
                "identity": list(user.identity),
                "change": "new password",
                "totp": "removed, enrolled again at the next login" if reset_totp else "kept",
                "totp_devices_removed": removed_devices,
            },
        )
    return password
