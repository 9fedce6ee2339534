"""Material expiry at work (SPEC §10): import material again before AWS's ValidTo deletes it.

A key with ``material_valid_days`` has each material imported with
``ExpirationModel=KEY_MATERIAL_EXPIRES`` and a ``ValidTo`` that many days ahead; AWS deletes
an expired material itself, and a key missing any permanently associated material stops
working (PendingImport). Run hourly by Celery beat (``keys.tasks.reimport_expiring_materials``),
this job re-imports every material of each key whose earliest expiry is near
(:func:`keys.lifecycle.reimport_due`) into every region of the key, through the ``reimport``
operation (audited like every operation).

One key at a time, under its lease (:func:`keys.services.lease_if_free`), checked to be still due
once held: two runs never re-import the same key at once. Paced like rotations
(``BYOK_ROTATION_PACE_SECONDS`` between keys): each material costs a GetParametersForImport of
the account's 0.25 per second (NOTES.md), shared with the customer.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from accounts.identity import Actor
from byok_portal.aws import AwsError
from byok_portal.errors import ServiceError
from byok_portal.vocabulary import Operation
from keys import services
from keys.lifecycle import reimport_candidates_q, reimport_due
from keys.models import KeyMaterial
from keys.operations import REGISTRY

logger = logging.getLogger("byok.jobs")


@dataclass
class ReimportSummary:
    """What one run did: keys re-imported, skipped (busy, or no longer due) or failed."""

    reimported: int = 0
    skipped: int = 0
    failed: int = 0


def due_for_reimport(now: dt.datetime) -> list[uuid.UUID]:
    """Keys with a material to import again now, the earliest expiry first."""
    rows = (
        KeyMaterial.objects.filter(reimport_candidates_q(now))
        .order_by("valid_to", "key_id")
        .values_list("key_id", "valid_to", "key__material_valid_days")
    )
    due: list[uuid.UUID] = []
    for key_id, valid_to, valid_days in rows:
        if key_id not in due and reimport_due(valid_to, valid_days, now):
            due.append(key_id)
    return due


def reimport_expiring_materials(
    *, actor: Actor, now: dt.datetime | None = None, until: float | None = None, pace_seconds: float | None = None
) -> ReimportSummary:
    """Re-import the material of every due key, most urgent first, until ``until`` (a monotonic time)."""
    moment = now or timezone.now()
    pace = settings.BYOK_ROTATION_PACE_SECONDS if pace_seconds is None else pace_seconds
    summary = ReimportSummary()
    for index, key_id in enumerate(due_for_reimport(moment)):
        if until is not None and time.monotonic() >= until:
            break
        if index and pace:
            time.sleep(pace)
        with services.lease_if_free(key_id) as free:
            if not free or not still_due(key_id, moment):
                summary.skipped += 1  # another run holds it, or it was re-imported (or rotated) meanwhile
                continue
            try:
                REGISTRY[Operation.REIMPORT].run(actor, key_id)
                summary.reimported += 1
            except (AwsError, ServiceError) as exc:
                summary.failed += 1  # audited by the operation; the key stays due for the next run
                logger.warning("material re-import failed", extra={"key_id": str(key_id), "error": str(exc)})
    return summary


def still_due(key_id: uuid.UUID, now: dt.datetime) -> bool:
    """The same question for one key, asked again once its lease is held."""
    rows = KeyMaterial.objects.filter(reimport_candidates_q(now), key_id=key_id).values_list(
        "valid_to", "key__material_valid_days"
    )
    return any(reimport_due(valid_to, days, now) for valid_to, days in rows)
