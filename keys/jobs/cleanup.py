"""Daily cleanup: keys whose deletion waiting period is over become ``DELETED`` and lose their material.

Claims due keys with ``SELECT ... FOR UPDATE SKIP LOCKED``, so a key is cleaned by
exactly one run and another run at the same time never sees it (no refusal event).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor
from audit.services import Entry, record_many
from byok_portal.aws import AwsError
from byok_portal.errors import Conflict
from byok_portal.vocabulary import Operation, Outcome
from keys.lifecycle import LIFECYCLE
from keys.models import Key
from keys.selectors import due_for_cleanup
from keys.services import cleaned_up_fields, destroy_material_copies, key_cleanup

logger = logging.getLogger("byok.jobs")
# Fields a cleanup batch needs to audit a key; the sealed material is never loaded.
_CLEANUP_FIELDS = ("id", "state", "alias", "kms_key_arn", "deletion_date", "keystore", "keystore__id", "keystore__name")


@dataclass
class CleanupSummary:
    """What one cleanup run did."""

    cleaned: int = 0
    batches: int = 0


def cleanup_due_keys(
    *, actor: Actor, now: dt.datetime | None = None, batch_size: int | None = None, until: float | None = None
) -> CleanupSummary:
    """Move every key whose deletion grace period is over to ``DELETED`` and destroy its material.

    Works in batches of ``batch_size`` keys (``BYOK_CLEANUP_BATCH_SIZE``), oldest
    deletion date first, one transaction per batch: memory stays bounded and the
    cleanup's own queries grow with batches, not keys (one SELECT and one UPDATE
    each; the audit trail adds one event per key).

    Rows are claimed with ``FOR UPDATE SKIP LOCKED``: a second run at the same time
    (two workers, a redelivered task) takes other keys or none, and a key a
    lifecycle operation is holding is left for the next run. Once a batch commits
    its keys are ``DELETED`` and no run selects them again.

    Past ``until`` (a ``time.monotonic()`` value) no new batch starts: the task
    hands the rest to a new task, so none runs near the broker's visibility timeout.
    """
    moment = now or timezone.now()
    size = batch_size or settings.BYOK_CLEANUP_BATCH_SIZE
    summary = CleanupSummary()
    while True:
        with transaction.atomic():
            batch = list(
                due_for_cleanup(moment)
                # A multi-Region key is cleaned only once AWS has deleted it in every region: one by one, below.
                .filter(multi_region=False)
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("keystore")
                .only(*_CLEANUP_FIELDS)
                .order_by("deletion_date", "id")[:size]
            )
            if not batch:
                break
            _clean_batch(actor, batch)
        summary.cleaned += len(batch)
        summary.batches += 1
        if until is not None and time.monotonic() >= until:
            break
    summary.cleaned += _clean_multi_region_keys(actor, moment)
    if summary.cleaned:
        logger.info("cleanup finished", extra={"cleaned": summary.cleaned, "batches": summary.batches})
    return summary


def _clean_multi_region_keys(actor: Actor, moment: dt.datetime) -> int:
    """Due multi-Region keys, each through :func:`keys.services.key_cleanup`, which asks every region first."""
    cleaned = 0
    due = due_for_cleanup(moment).filter(multi_region=True).order_by("deletion_date", "id")
    for key_id in due.values_list("id", flat=True):
        try:
            key_cleanup(actor=actor, key_id=key_id, now=moment)
        except (Conflict, AwsError) as exc:  # a region still holds its KMS key, or AWS could not be asked
            logger.info("multi-region key not cleaned yet", extra={"key_id": str(key_id), "reason": str(exc)})
            continue
        cleaned += 1
    return cleaned


def _clean_batch(actor: Actor, batch: Sequence[Key]) -> None:
    """Clean locked, due keys: what :func:`keys.services.key_cleanup` does to one key, for many at once."""
    # due_for_cleanup selects exactly the state the lifecycle table allows cleanup in; the target comes from it too.
    target = LIFECYCLE[Operation.CLEANUP].target
    ids = [key.pk for key in batch]
    Key.objects.filter(pk__in=ids).update(
        state=target, **cleaned_up_fields(), updated_by=None, updated_at=timezone.now()
    )
    destroy_material_copies(ids)
    # One head lock and one INSERT for the batch's events: statements grow with batches, not keys.
    record_many(
        [
            Entry(
                actor=actor,
                operation=Operation.CLEANUP,
                outcome=Outcome.SUCCESS,
                key=key,
                state_before=key.state,
                state_after=str(target),
                details={"deletion_date": key.deletion_date.isoformat() if key.deletion_date else None},
            )
            for key in batch
        ]
    )
