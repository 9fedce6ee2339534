"""Celery tasks for keys: thin callers of the jobs in :mod:`keys.jobs`, scheduled by beat (see settings).

Tasks take ids only (their arguments sit in the broker in plain text) and run
with ``acks_late``: a worker that dies mid-task leaves the message to be
delivered again, so every task is idempotent (see :mod:`keys.jobs`).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from accounts.identity import Actor
from byok_portal.aws import AwsError
from keys.jobs import cleanup, expiry, reconcile, reimport, rotation
from keys.selectors import due_for_cleanup
from keystores.models import Keystore, KeystoreState

logger = logging.getLogger("byok.jobs")


def _deadline() -> float:
    """When a task stops taking new work (``BYOK_TASK_BUDGET_SECONDS``) and hands the rest to a new task."""
    return time.monotonic() + settings.BYOK_TASK_BUDGET_SECONDS


@shared_task(acks_late=True)
def cleanup_due_keys() -> dict[str, int]:
    """The daily cleanup: keys whose deletion grace period is over become DELETED.

    Within its time budget; what is left goes to a new task, so every task stays
    well inside the broker's visibility timeout (a killed one comes back quickly).
    """
    until = _deadline()
    summary = cleanup.cleanup_due_keys(actor=Actor.system("cleanup"), until=until)
    if time.monotonic() >= until and due_for_cleanup().exists():
        cleanup_due_keys.delay()
    return asdict(summary)


@shared_task(acks_late=True)
def rotate_due_keys() -> dict[str, int]:
    """The rotation policy: due keys rotated (or renewed, or flagged), one at a time, paced, within the budget.

    What is left (a slow AWS, many due keys) goes to a new task. A redelivered task finds
    the keys it already rotated no longer due (idempotent).
    """
    until = _deadline()
    summary = rotation.rotate_due_keys(actor=Actor.system("rotation"), until=until)
    if time.monotonic() >= until and rotation.due_for_rotation(timezone.localdate()).exists():
        rotate_due_keys.delay()
    return asdict(summary)


@shared_task(acks_late=True)
def reimport_expiring_materials() -> dict[str, int]:
    """Material expiry: keys whose material AWS would soon delete get it imported again, one at a time, paced.

    Hourly, so a material valid for a day is re-imported in time. What is left when the budget is
    spent goes to a new task; a redelivered task finds the keys it re-imported no longer due.
    """
    until = _deadline()
    summary = reimport.reimport_expiring_materials(actor=Actor.system("reimport"), until=until)
    if time.monotonic() >= until and reimport.due_for_reimport(timezone.now()):
        reimport_expiring_materials.delay()
    return asdict(summary)


@shared_task(acks_late=True)
def reconcile_all() -> dict[str, int]:
    """Resolve interrupted key work, then fan out per active keystore: the KMS scan, then :func:`reconcile_keystore`.

    Keystores are independent AWS accounts (their own quotas and failures), so
    they are reconciled in parallel by as many workers as there are.
    """
    actor = Actor.system("reconcile")
    keystore_ids = list(Keystore.objects.filter(state=KeystoreState.ACTIVE).values_list("id", flat=True))
    recovered = reconcile.recover_interrupted_creations(actor=actor)
    for keystore_id in keystore_ids:
        # The scan repairs first (orphans, stranded aliases), then the keys are compared with KMS.
        sweep_keystore.delay(str(keystore_id), reconcile_after=True)
    return {"keystores": len(keystore_ids), "orphans_resolved": recovered}


@shared_task(acks_late=True)
def reconcile_keystore(keystore_id: str, after: str | None = None) -> dict[str, Any]:
    """Reconcile one chunk of a keystore's keys, then hand the rest to a new task.

    Chunks keep every task short (well inside the broker's visibility timeout)
    and, run one after the other, keep the keystore's KMS calls under its rate limit.
    """
    summary, resume_after = reconcile.reconcile_keystore(
        uuid.UUID(keystore_id),
        actor=Actor.system("reconcile"),
        after=uuid.UUID(after) if after else None,
        limit=settings.BYOK_RECONCILE_CHUNK,
        until=_deadline(),
    )
    if resume_after is not None:
        reconcile_keystore.delay(keystore_id, str(resume_after))
    return {**asdict(summary), "continues_after": str(resume_after) if resume_after else None}


@shared_task(acks_late=True)
def sweep_keystore(keystore_id: str, marker: str | None = None, reconcile_after: bool = False) -> dict[str, Any]:
    """Scan one keystore's KMS for keys carrying the portal's tag that no portal row owns (see reconcile).

    Page by page within the time budget; the rest of the account goes to a new
    task. With ``reconcile_after``, the keystore's keys are reconciled once the scan is done.
    """
    try:
        result = reconcile.sweep_untracked_kms_keys(
            uuid.UUID(keystore_id), actor=Actor.system("reconcile"), marker=marker, until=_deadline()
        )
    except AwsError as exc:  # the scan waits for the next run; the keys are still compared with KMS
        logger.warning("could not scan the keystore for untracked KMS keys", extra={"aws_code": exc.code})
        result = reconcile.SweepResult()
    if result.resume_marker is not None:
        sweep_keystore.delay(keystore_id, result.resume_marker, reconcile_after)
    elif reconcile_after:
        reconcile_keystore.delay(keystore_id)
    return asdict(result)


def scan_keystore_soon(keystore_id: uuid.UUID) -> None:
    """Ask for :func:`sweep_keystore` now (after a retried CreateKey; see ``keys.services``)."""
    try:
        sweep_keystore.delay(str(keystore_id))
    except Exception:  # the broker is down: the periodic reconciliation scans anyway
        logger.warning(
            "could not enqueue a KMS scan after a retried CreateKey", extra={"keystore_id": str(keystore_id)}
        )


@shared_task(acks_late=True)
def reconcile_key(key_id: str) -> str:
    """Reconcile a single key now (e.g. after a custodian asks for a fresh look)."""
    return str(reconcile.reconcile_key(uuid.UUID(key_id), actor=Actor.system("reconcile")))


@shared_task(acks_late=True)
def warn_expiring_keys() -> dict[str, int]:
    """The daily expiry warnings: audit event, alert log line and dashboard flag, once a day per key."""
    return {"warned": expiry.warn_expiring_keys(actor=Actor.system("expiry"))}
