"""Notification events: which audit events become which notification, and the JSON each one is.

The audit trail is the source: every branch's operations are audited, so mapping audit
operations to event types here is the only thing a new kind of notification needs. The payload is documented
in ``docs/notifications.md`` (``schema_version`` 1) and never carries key material or
tokens: it is built from the audit event (which never holds them either) and copies
only the ``details`` entries each type names.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from enum import StrEnum
from typing import Any

from audit.models import AuditEvent
from byok_portal.vocabulary import Outcome

SCHEMA_VERSION = 1
# Event ids are derived from the audit sequence number: the same audit event is always the same notification.
_EVENT_NAMESPACE = uuid.UUID("6f1f8f52-5d3e-4a53-9a5e-2b0a8f0c1e21")


class EventType(StrEnum):
    """The notification events of SPEC §15, with stable names (they are part of the webhook contract)."""

    EXPIRY_WARNING = "key.expiry_warning"
    ROTATION_DUE = "key.rotation_due"
    ROTATION_DONE = "key.rotation_done"
    DRIFT_FOUND = "key.drift_found"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_DECIDED = "approval.decided"
    OPERATION_FAILED = "operation.failed"
    DELETION_SCHEDULED = "key.deletion_scheduled"
    KEY_DELETED = "key.deleted"
    TEST = "webhook.test"


LABELS: dict[EventType, str] = {
    EventType.EXPIRY_WARNING: "Key expires soon",
    EventType.ROTATION_DUE: "Rotation due",
    EventType.ROTATION_DONE: "Key rotated",
    EventType.DRIFT_FOUND: "KMS drift found",
    EventType.APPROVAL_REQUESTED: "Approval requested",
    EventType.APPROVAL_DECIDED: "Approval decided",
    EventType.OPERATION_FAILED: "Operation failed",
    EventType.DELETION_SCHEDULED: "Deletion scheduled",
    EventType.KEY_DELETED: "Key deleted",
    EventType.TEST: "Test event",
}
# What people and webhooks may subscribe to (the test event is sent on request only).
SUBSCRIBABLE = tuple(event for event in EventType if event is not EventType.TEST)

# Successful audit operations that are events, by audit operation name (``byok_portal.vocabulary.Operation``).
# An approved request's run (``execute_approval``) is not one: the operation it ran is audited (and notifies)
# itself, and a failed run is an ``operation.failed``. A withdrawn request (``cancel_approval``) is not news.
_BY_OPERATION: dict[str, EventType] = {
    "expiry_warning": EventType.EXPIRY_WARNING,
    "rotate": EventType.ROTATION_DONE,
    "schedule_deletion": EventType.DELETION_SCHEDULED,
    "cleanup": EventType.KEY_DELETED,
    "request_approval": EventType.APPROVAL_REQUESTED,
    "reject": EventType.APPROVAL_DECIDED,
    "expire_approval": EventType.APPROVAL_DECIDED,
}
# What an ``approval.decided`` event's ``data.decision`` says, by audit operation.
_DECISIONS = {"approve": "approved", "reject": "rejected", "expire_approval": "expired"}
# The scheduled rotation (keys/jobs/rotation.py) flags a due key it may not rotate or renew with this refusal.
_ROTATION_DUE_REASON = "rotation_due_cannot_rotate"
# Reconciliation audits every change of drift; a new or changed disagreement is news, its end is not.
_DRIFT_REASONS = frozenset({"drift_found", "drift_changed"})
# The audit ``details`` entries each type copies into ``data`` (nothing else leaves the trail).
_DATA: dict[EventType, tuple[str, ...]] = {
    EventType.EXPIRY_WARNING: ("expires", "days_left"),
    EventType.ROTATION_DUE: ("next_rotation_date", "why"),
    EventType.ROTATION_DONE: ("version", "previous_version", "kms_key_material_id", "kcv", "rotations", "approval"),
    EventType.DRIFT_FOUND: ("drift", "kms_state", "aws_state"),
    EventType.APPROVAL_REQUESTED: ("request", "operation", "group", "required"),
    EventType.APPROVAL_DECIDED: ("request", "operation", "group", "required", "approvals", "reason", "expires_at"),
    EventType.OPERATION_FAILED: ("aws_code",),
    EventType.DELETION_SCHEDULED: ("deletion_date", "pending_window_days", "approval"),
    EventType.KEY_DELETED: (),
    EventType.TEST: (),
}


def event_type_of(event: AuditEvent) -> EventType | None:
    """The notification an audit event is, if any (no queries: it runs for every recorded event)."""
    if event.outcome == Outcome.FAILED:
        return EventType.OPERATION_FAILED
    if event.outcome == Outcome.REFUSED and event.operation == "rotate" and event.reason == _ROTATION_DUE_REASON:
        return EventType.ROTATION_DUE
    if event.outcome != Outcome.SUCCESS:
        return None
    if event.operation == "reconcile":
        return EventType.DRIFT_FOUND if event.reason in _DRIFT_REASONS else None
    if event.operation == "approve":  # one approval among several is not a decision; the one reaching quorum is
        return EventType.APPROVAL_DECIDED if (event.details or {}).get("quorum") is True else None
    return _BY_OPERATION.get(event.operation)


def event_id_of(seq: int) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, f"audit:{seq}")


def _time(value: Any) -> str:
    return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def summary_of(kind: EventType, event: AuditEvent) -> str:
    """One line a person reads first (email subject, chat message)."""
    subject = event.key_alias or (f"key {event.key_id}" if event.key_id else f"keystore {event.keystore_name}")
    where = f" in {event.keystore_name}" if event.keystore_name else ""
    details = event.details or {}
    if kind is EventType.EXPIRY_WARNING:
        days = details.get("days_left")
        when = f"expired {-int(days)} day(s) ago" if isinstance(days, int) and days < 0 else f"expires in {days} day(s)"
        return f"{subject}{where} {when}"
    if kind is EventType.OPERATION_FAILED:
        return f"{event.operation} failed on {subject}{where}"
    if kind is EventType.APPROVAL_DECIDED:
        decision = _DECISIONS.get(event.operation, event.operation)
        return f"Approval {decision}: {details.get('operation', '')} of {subject}{where}"
    if kind is EventType.APPROVAL_REQUESTED:
        return f"Approval requested: {details.get('operation', '')} of {subject}{where}"
    return f"{LABELS[kind]}: {subject}{where}"


def _data_of(kind: EventType, operation: str, details: dict[str, Any]) -> dict[str, Any]:
    data = {name: details[name] for name in _DATA[kind] if name in details}
    if kind is EventType.APPROVAL_DECIDED:
        data["decision"] = _DECISIONS.get(operation, operation)
    return data


def payload_of(kind: EventType, event: AuditEvent) -> dict[str, Any]:
    """The event's JSON document (schema version 1, see docs/notifications.md)."""
    details = event.details or {}
    return {
        "id": str(event_id_of(event.seq)),
        "type": str(kind),
        "schema_version": SCHEMA_VERSION,
        "occurred_at": _time(event.time),
        "summary": summary_of(kind, event),
        "keystore": {"id": str(event.keystore_id), "name": event.keystore_name} if event.keystore_id else None,
        "key": ({"id": str(event.key_id), "alias": event.key_alias, "arn": event.key_arn} if event.key_id else None),
        "operation": event.operation,
        "outcome": event.outcome,
        "reason": event.reason,
        "state_before": event.state_before,
        "state_after": event.state_after,
        "actor": {"name": event.actor_name, "iss": event.actor_iss, "sub": event.actor_sub},
        "error": event.error,
        "data": _data_of(kind, event.operation, details),
        "audit": {"seq": event.seq, "hash": event.hash},
    }


def webhook_test_payload(*, keystore_id: uuid.UUID, keystore_name: str, actor_name: str, at: Any) -> dict[str, Any]:
    """A ``webhook.test`` document: the same shape, no key and no audit event behind it."""
    return {
        "id": str(uuid.uuid4()),
        "type": str(EventType.TEST),
        "schema_version": SCHEMA_VERSION,
        "occurred_at": _time(at),
        "summary": f"Test event for keystore {keystore_name}",
        "keystore": {"id": str(keystore_id), "name": keystore_name},
        "key": None,
        "operation": "",
        "outcome": "",
        "reason": "",
        "state_before": "",
        "state_after": "",
        "actor": {"name": actor_name, "iss": "", "sub": ""},
        "error": "",
        "data": {},
        "audit": None,
    }
