"""Expiry warnings: once a day, keys whose cryptoperiod ends soon (or has ended) are flagged.

An expiry warning claims the key for the day with a conditional UPDATE first, so a
second run the same day (or a redelivered task) warns nobody twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor
from audit.services import record
from byok_portal.vocabulary import Operation, Outcome
from keys.models import Key
from keys.selectors import expiring_unwarned

logger = logging.getLogger("byok.jobs")


def warn_expiring_keys(*, actor: Actor, today: dt.date | None = None, batch_size: int = 500) -> int:
    """Flag keys whose cryptoperiod ends within ``BYOK_EXPIRY_WARNING_DAYS`` (or has ended), once a day each.

    Each warning is an audit event, a structured log line (``event=key_expiry_warning``,
    for alerting) and ``expiry_warned_on`` set to today, which the dashboard shows.
    A conditional UPDATE claims the key for the day before anything is written, so a
    second run the same day (or a redelivered task) warns nobody twice.
    """
    day = today or timezone.localdate()
    due = expiring_unwarned(day)
    warned = 0
    last: uuid.UUID | None = None
    while True:
        page = due.filter(id__gt=last) if last is not None else due
        batch = list(page[:batch_size])
        if not batch:
            return warned
        for key in batch:
            warned += _warn(actor, key, day)
        last = batch[-1].pk


def _warn(actor: Actor, key: Key, day: dt.date) -> int:
    assert key.expires is not None
    days_left = (key.expires - day).days
    with transaction.atomic():
        claimed = Key.objects.filter(pk=key.pk).exclude(expiry_warned_on=day).update(expiry_warned_on=day)
        if not claimed:
            return 0
        record(
            actor=actor,
            operation=Operation.EXPIRY_WARNING,
            outcome=Outcome.SUCCESS,
            key=key,
            reason="expired" if days_left < 0 else "expires_soon",
            state_before=key.state,
            state_after=key.state,
            details={"expires": key.expires.isoformat(), "days_left": days_left},
        )
    logger.warning(
        "key expired" if days_left < 0 else "key expires soon",
        extra={
            "event": "key_expiry_warning",
            "key_id": str(key.pk),
            "keystore_id": str(key.keystore_id),
            "keystore": key.keystore.name,
            "key_name": key.name,
            "alias": key.alias,
            "expires": key.expires.isoformat(),
            "days_left": days_left,
        },
    )
    return 1
