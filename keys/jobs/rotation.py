"""The rotation policy at work (SPEC §10): rotate the keys that are due, one key at a time, paced.

Run daily by Celery beat (``keys.tasks.rotate_due_keys``). A due key is an ACTIVE key whose
``next_rotation_date`` has come. It is rotated in place when it can be (symmetric, fewer than
25 rotations); otherwise its policy's ``rotation_on_limit`` says: renew it, or flag it (an
audited refusal the custodians see, and the key stays overdue on the dashboard).

One key at a time: each key is taken under its lease (:func:`keys.services.lease_if_free`),
so two runs never rotate the same key, and it is checked to be still due once held. Paced:
``BYOK_ROTATION_PACE_SECONDS`` between keys, because every rotation spends one
GetParametersForImport of the account's 0.25 per second (NOTES.md), shared with the customer.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from accounts.identity import Actor
from audit.services import record
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import Conflict, ServiceError
from byok_portal.vocabulary import Operation, Outcome
from keys import materials, services
from keys.lifecycle import due_for_rotation_q
from keys.models import Key
from keys.operations import REGISTRY
from keys.specs import spec_of
from keystores.models import RotationOnLimit

logger = logging.getLogger("byok.jobs")


@dataclass
class RotationSummary:
    """What one run did: keys rotated, renewed instead, flagged, skipped (busy or no longer due), failed, or
    waiting for the approvals their keystore's ``change_material`` policy asks (a request open, not a failure)."""

    rotated: int = 0
    renewed: int = 0
    flagged: int = 0
    skipped: int = 0
    failed: int = 0
    awaiting_approval: int = 0


def due_for_rotation(today: dt.date) -> QuerySet[Key]:
    return Key.objects.filter(due_for_rotation_q(today)).order_by("next_rotation_date", "id")


def can_rotate(key: Key) -> bool:
    return spec_of(key.key_spec).versioned and key.rotations < materials.ROTATION_LIMIT


def rotate_due_keys(
    *, actor: Actor, today: dt.date | None = None, until: float | None = None, pace_seconds: float | None = None
) -> RotationSummary:
    """Rotate (or renew, or flag) every due key, oldest due first, until ``until`` (a monotonic time)."""
    day = today or timezone.localdate()
    pace = settings.BYOK_ROTATION_PACE_SECONDS if pace_seconds is None else pace_seconds
    summary = RotationSummary()
    for index, key_id in enumerate(list(due_for_rotation(day).values_list("pk", flat=True))):
        if until is not None and time.monotonic() >= until:
            break
        if index and pace:
            time.sleep(pace)
        with services.lease_if_free(key_id) as free:
            key = due_for_rotation(day).filter(pk=key_id).first() if free else None
            if key is None:
                summary.skipped += 1  # another run holds it, or it was rotated meanwhile
                continue
            _apply_policy(actor, key, summary)
    return summary


def _apply_policy(actor: Actor, key: Key, summary: RotationSummary) -> None:
    try:
        if can_rotate(key):
            REGISTRY[Operation.ROTATE].run(actor, key.pk)
            summary.rotated += 1
        elif key.rotation_on_limit == RotationOnLimit.RENEW:
            REGISTRY[Operation.RENEW].run(actor, key.pk)
            summary.renewed += 1
        else:
            _flag(actor, key)
            summary.flagged += 1
    except ApprovalPending as pending:
        # The policy wants people to approve it: the request (opened by the first run, found again by
        # the next ones — one open request per key) waits in the approvals inbox; the key stays due.
        summary.awaiting_approval += 1
        logger.info(
            "scheduled rotation awaits approval",
            extra={"key_id": str(key.pk), "approval_request": str(pending.approval_request.get("id"))},
        )
    except (AwsError, ServiceError) as exc:
        if isinstance(exc, Conflict) and exc.extra.get("reason") == "approval_pending":
            # Someone's other request for this key is open (one per key): the rotation asks once it has ended.
            summary.skipped += 1
            logger.info("scheduled rotation waits for another open request", extra={"key_id": str(key.pk)})
            return
        summary.failed += 1  # audited by the operation itself; the key stays due for the next run
        logger.warning("scheduled rotation failed", extra={"key_id": str(key.pk), "error": str(exc)})


def _flag(actor: Actor, key: Key) -> None:
    """A due key that cannot rotate and whose policy says so: an audited refusal naming why (once a day at most)."""
    reason = "not symmetric" if not spec_of(key.key_spec).versioned else f"{materials.ROTATION_LIMIT} rotations done"
    record(
        actor=actor,
        operation=Operation.ROTATE,
        outcome=Outcome.REFUSED,
        key=key,
        reason="rotation_due_cannot_rotate",
        state_before=key.state,
        state_after=key.state,
        details={
            "next_rotation_date": key.next_rotation_date.isoformat() if key.next_rotation_date else None,
            "why": reason,
        },
    )
