"""The rotation policy of a key (SPEC §10): when its material is next due to rotate.

A key with ``rotation_period_days`` is due that many days after its last rotation (or,
never rotated, after its creation). ``Key.next_rotation_date`` is kept from this one
function, so lists, the dashboard and the beat task (:mod:`keys.jobs.rotation`) read a
column, not a computation.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from keys.models import Key


def next_rotation_date(key: Key) -> dt.date | None:
    """When ``key`` is due to rotate under its policy; None without a policy."""
    if key.rotation_period_days is None:
        return None
    since = key.rotated_at or key.created_at or timezone.now()
    return timezone.localdate(since) + dt.timedelta(days=key.rotation_period_days)
