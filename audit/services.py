"""Writing the audit trail: :func:`record` is the one entry point."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone

from audit.chain import GENESIS, event_hash
from audit.models import AuditEvent, AuditHead
from byok_portal import dual_control, metrics
from byok_portal.errors import NotFound, ServiceError
from byok_portal.vocabulary import Outcome

# What an event copies from whoever acted and from what they acted on. Protocols, not the
# apps' classes: the trail sits below accounts, keystores and keys and imports none of them
# (``accounts.identity.Actor``, ``keystores.models.Keystore`` and ``keys.models.Key`` fit).


class Actor(Protocol):
    @property
    def iss(self) -> str: ...
    @property
    def sub(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def source_ip(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...


class Keystore(Protocol):
    @property
    def pk(self) -> Any: ...
    @property
    def name(self) -> str: ...


class Key(Protocol):
    @property
    def pk(self) -> Any: ...
    @property
    def alias(self) -> str: ...
    @property
    def kms_key_arn(self) -> str: ...
    @property
    def keystore(self) -> Keystore: ...


logger = logging.getLogger("byok.audit")

# Told about every recorded event once its transaction has committed (notifications, installed from above
# the trail at start-up by ``NotificationsConfig.ready``): events of a rolled-back transaction never leave.
AfterCommit = Callable[[Sequence[AuditEvent]], None]
_after_commit: AfterCommit | None = None


def after_commit_call(hook: AfterCommit) -> None:
    """Install the one hook that sees recorded events after their transaction commits."""
    global _after_commit  # set once, at start-up
    _after_commit = hook


def _hand_on(events: Sequence[AuditEvent]) -> None:
    hook = _after_commit
    if hook is None:
        return
    try:
        hook(events)
    except Exception:
        # The events are committed: a failing subscriber must not turn a done operation into an error.
        logger.exception("the after-commit audit hook failed", extra={"seqs": [event.seq for event in events]})


REDACTED = "[redacted]"
# Names of ``details`` entries whose values are never stored, whatever they hold.
_SECRET_NAME = re.compile(
    r"material|plaintext|token|password|passphrase|secret|kek|private|public_key|pem|wrapped|credential|"
    r"authorization|cookie|session",
    re.IGNORECASE,
)
# Values that look like key material, tokens or keys, wherever they appear in free text:
# PEM blocks, JWTs, the portal's tokens and webhook secrets, 256-bit values in hex or base64,
# and long base64 blobs (wrapped keys, import tokens). A digest written as "SHA256:<hex>" (how
# custody prints public-key fingerprints) says what it is and is kept.
_SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    # The portal's own secrets by their prefixes: API tokens (byok_…) and webhook signing secrets (whsec_…).
    r"|\b(?:byok|whsec)_[A-Za-z0-9_-]{32,}"
    r"|(?<![0-9A-Fa-f])(?<!SHA256:)[0-9A-Fa-f]{64,}(?![0-9A-Fa-f])"
    r"|(?<![A-Za-z0-9+/])(?<!SHA256:)(?:[A-Za-z0-9+/]{43}=|[A-Za-z0-9+/]{64,}={0,2})(?![A-Za-z0-9+/=])",
    re.DOTALL,
)


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith("fingerprint")


def _text(value: Any, *, limit: int | None = None) -> str:
    """A string PostgreSQL can store (no NUL), cut to the column's length."""
    text = str(value).replace("\x00", "\ufffd")
    return text[:limit] if limit is not None else text


def _scrubbed(value: str, where: str) -> str:
    cleaned = _SECRET_VALUE.sub(REDACTED, _text(value))
    if cleaned != value:
        # The field's name only: the point is that the value goes nowhere.
        logger.warning("secret-looking value redacted from an audit event", extra={"field": where})
    return cleaned


def _json_safe(value: Any, where: str) -> Any:
    """``value`` as JSON that survives a round trip through ``jsonb`` unchanged, with secrets redacted.

    The chain hashes what :func:`record` computed, and verification hashes what the
    database returns, so the two must be equal: dict keys become strings, sets
    sorted lists, floats their text.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        # jsonb would print some floats differently (1e100, -0.0): keep their text instead.
        return repr(value)
    if isinstance(value, str):
        return _scrubbed(value, where)
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for name, item in value.items():
            key = _text(name)
            if _is_secret_name(key):
                logger.warning("secret-named entry redacted from an audit event", extra={"field": f"{where}.{key}"})
                cleaned[key] = REDACTED
            else:
                cleaned[key] = _json_safe(item, f"{where}.{key}")
        return cleaned
    if isinstance(value, set | frozenset):
        return sorted((_json_safe(item, where) for item in value), key=repr)
    if isinstance(value, list | tuple):
        return [_json_safe(item, where) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _scrubbed(str(value), where)


def _normalised_ip(value: str | None) -> str | None:
    """The address in the one spelling Python and PostgreSQL share.

    IPv4 clients seen through an IPv6 socket (``::ffff:a.b.c.d``, or the deprecated
    ``::a.b.c.d``) are recorded as the IPv4 address: PostgreSQL prints those forms
    unlike Python, and the client is the IPv4 one anyway.
    """
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if int(address) >> 32 == 0 and int(address) > 1:
            return str(ipaddress.IPv4Address(int(address)))
    return str(address)


@dataclass(frozen=True)
class Entry:
    """One event to append: what :func:`record` takes, as a value (for :func:`record_many`)."""

    actor: Actor
    operation: str
    outcome: Outcome
    keystore: Keystore | None = None
    key: Key | None = None
    reason: str = ""
    state_before: str = ""
    state_after: str = ""
    kms_request_ids: Sequence[str] = ()
    error: str = ""
    details: Mapping[str, Any] | None = None


def _values(entry: Entry, seq: int, time: Any) -> dict[str, Any]:
    keystore = entry.keystore if entry.keystore is not None or entry.key is None else entry.key.keystore
    key, actor = entry.key, entry.actor
    return {
        "seq": seq,
        "time": time,
        "actor_iss": _text(actor.iss, limit=255),
        "actor_sub": _text(actor.sub, limit=255),
        "actor_name": _text(actor.display_name, limit=255),
        "source_ip": _normalised_ip(actor.source_ip),
        "request_id": _text(actor.request_id, limit=64),
        "operation": _text(entry.operation, limit=32),
        "keystore_id": keystore.pk if keystore else None,
        "keystore_name": _text(keystore.name, limit=200) if keystore else "",
        "key_id": key.pk if key else None,
        "key_alias": _text(key.alias, limit=256) if key else "",
        "key_arn": _text(key.kms_key_arn, limit=2048) if key else "",
        "outcome": _text(entry.outcome, limit=16),
        "reason": _scrubbed(entry.reason, "reason")[:128],
        "state_before": _text(entry.state_before, limit=20),
        "state_after": _text(entry.state_after, limit=20),
        "kms_request_ids": [_scrubbed(rid, "kms_request_ids") for rid in entry.kms_request_ids if rid],
        "error": _scrubbed(entry.error, "error"),
        "details": _json_safe(_with_credential(actor, _with_approval(entry)), "details"),
    }


def _with_approval(entry: Entry) -> dict[str, Any]:
    """The entry's details; an approved request's operation also names the request and its approvers."""
    details = dict(entry.details or {})
    approved = dual_control.current()
    if approved is not None and entry.operation == approved.operation:
        details.setdefault("approval", approved.audit_details())
    return details


def _with_credential(actor: Actor, details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The event's details, naming the API token the actor used, if any (SPEC §13).

    Under ``api_client`` (an entry named "token" would be redacted as a secret): the token's
    id and its owner-given name, never the token itself.
    """
    merged = dict(details or {})
    grant = getattr(actor, "via_token", None)
    if grant is not None:
        merged["api_client"] = {"kind": "api_token", "id": str(grant.id), "name": str(grant.name)}
    return merged


def record(
    *,
    actor: Actor,
    operation: str,
    outcome: Outcome,
    keystore: Keystore | None = None,
    key: Key | None = None,
    reason: str = "",
    state_before: str = "",
    state_after: str = "",
    kms_request_ids: Sequence[str] = (),
    error: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction.

    Callers record in the same transaction as the change they describe, so the
    two commit or roll back together; if the event cannot be written the change
    does not happen (fail closed). Call it last in the transaction: the chain's
    head row stays locked until commit, which serialises every other writer.

    Callers pass ids, states and AWS request ids — never material, tokens or whole
    public keys. As a second line of defence, ``details`` entries with secret-sounding
    names and secret-looking values in ``error``, ``reason`` and ``details``
    (PEM blocks, JWTs, 256-bit hex/base64, long base64 blobs) are replaced by
    ``"[redacted]"`` and a warning naming the field is logged.
    """
    entry = Entry(
        actor=actor,
        operation=operation,
        outcome=outcome,
        keystore=keystore,
        key=key,
        reason=reason,
        state_before=state_before,
        state_after=state_after,
        kms_request_ids=kms_request_ids,
        error=error,
        details=details,
    )
    return record_many([entry])[0]


def record_many(entries: Sequence[Entry]) -> list[AuditEvent]:
    """Append several events in order, with one lock of the head and one INSERT.

    For batch work (the daily cleanup): the statements grow with batches, not with
    events. Same contract as :func:`record`.
    """
    if not entries:
        return []
    # No savepoint: if the insert fails, the caller's transaction must fail with it.
    with transaction.atomic(savepoint=False):
        # Locking the head serialises appends: two writers never chain onto the same
        # previous event, so the chain cannot fork.
        head, _ = AuditHead.objects.select_for_update().get_or_create(pk=1)
        events: list[AuditEvent] = []
        seq, previous_hash, previous_time = head.seq, head.hash or GENESIS, head.time
        now = timezone.now()
        for entry in entries:
            seq += 1
            # Never earlier than the previous event, whatever the clocks of the web
            # processes say: time order is then chain order, which the time filters rely on.
            time = max(now, previous_time) if previous_time else now
            values = _values(entry, seq, time)
            values["hash"] = previous_hash = event_hash(previous_hash, values)
            previous_time = time
            events.append(AuditEvent(**values))
        AuditEvent.objects.bulk_create(events)
        head.seq, head.hash, head.time = seq, previous_hash, previous_time
        head.save(update_fields=["seq", "hash", "time"])
    # Counted once the events are for real: a rolled-back operation did not happen.
    counted = [(event.operation, event.outcome) for event in events]
    transaction.on_commit(lambda: metrics.count_operations(counted))
    if _after_commit is not None:
        transaction.on_commit(lambda: _hand_on(events))
    for event in events:
        logger.info(
            "audit event",
            extra={
                "seq": event.seq,
                "operation": event.operation,
                "outcome": event.outcome,
                "reason": event.reason,
                "key_id": str(event.key_id or ""),
                "keystore_id": str(event.keystore_id or ""),
                "actor": f"{event.actor_iss}|{event.actor_sub}",
            },
        )
    return events


def record_refusal(
    *,
    actor: Actor,
    operation: str,
    exc: ServiceError,
    key: Key | None = None,
    keystore: Keystore | None = None,
    state: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Audit a refused attempt in a transaction of its own, so it survives the rollback of the attempt.

    The reason is ``permission_denied`` for an outsider (who was told "not found") and
    otherwise what the refusal names (``reason``, else its code); ``state`` is the key's
    state, unchanged by a refusal.
    """
    reason = "permission_denied" if isinstance(exc, NotFound) else str(exc.extra.get("reason") or exc.code)
    with transaction.atomic():
        return record(
            actor=actor,
            operation=operation,
            outcome=Outcome.REFUSED,
            key=key,
            keystore=keystore,
            reason=reason,
            state_before=state,
            state_after=state,
            error=exc.detail,
            details=details,
        )
