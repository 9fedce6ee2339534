"""Writing the audit trail: :func:`record` is the one entry point."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from audit.chain import GENESIS, event_hash
from audit.models import AuditEvent, AuditHead, Outcome

if TYPE_CHECKING:
    from accounts.identity import Actor
    from keys.models import Key
    from keystores.models import Keystore

logger = logging.getLogger("byok.audit")


def _normalised_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


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
    does not happen (fail closed). Callers pass ids, states and AWS request ids —
    never material, tokens or whole public keys.
    """
    if keystore is None and key is not None:
        keystore = key.keystore
    with transaction.atomic():
        # Locking the head serialises appends: two writers never chain onto the same
        # previous event, so the chain cannot fork.
        head, _ = AuditHead.objects.select_for_update().get_or_create(pk=1)
        values: dict[str, Any] = {
            "seq": head.seq + 1,
            "time": timezone.now(),
            "actor_iss": actor.iss,
            "actor_sub": actor.sub,
            "actor_name": actor.display_name[:255],
            "source_ip": _normalised_ip(actor.source_ip),
            "request_id": actor.request_id[:64],
            "operation": str(operation),
            "keystore_id": keystore.pk if keystore else None,
            "keystore_name": keystore.name if keystore else "",
            "key_id": key.pk if key else None,
            "key_alias": key.alias if key else "",
            "key_arn": key.kms_key_arn if key else "",
            "outcome": str(outcome),
            "reason": reason[:128],
            "state_before": state_before,
            "state_after": state_after,
            "kms_request_ids": [rid for rid in kms_request_ids if rid],
            "error": error,
            "details": dict(details or {}),
        }
        values["hash"] = event_hash(head.hash or GENESIS, values)
        event = AuditEvent.objects.create(**values)
        head.seq = event.seq
        head.hash = event.hash
        head.save(update_fields=["seq", "hash"])
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
    return event
