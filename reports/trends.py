"""The dashboard over time (SPEC §15): operations per day, keys by state per day, material age.

Each function is a few grouped queries, whatever the number of keys or events: the
trail is grouped by day in the database, and the key counts of earlier days are the
current counts with each day's state changes (from the trail) undone.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, F, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from audit.selectors import events_for
from byok_portal.vocabulary import KeyState, Outcome
from keys.selectors import keys_by_state, keys_for
from keystores.selectors import Viewer
from reports.selectors import LIVE_STATES, material_facts

DAYS = 30


@dataclass(frozen=True)
class Series:
    name: str
    values: list[int]


@dataclass(frozen=True)
class Trend:
    """A chart's data: one label per point along x, and one or more series of counts."""

    labels: list[str]
    series: list[Series]

    def rows(self) -> list[tuple[str, list[int]]]:
        """The same numbers as table rows: one per label, one cell per series."""
        return [(label, [s.values[i] for s in self.series]) for i, label in enumerate(self.labels)]


def _days(today: dt.date, days: int) -> list[dt.date]:
    return [today - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]


def operations_per_day(user: Viewer, *, today: dt.date | None = None, days: int = DAYS) -> Trend:
    """Audited operations per UTC day: succeeded (or no-op) and refused or failed."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    start = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time.min, tzinfo=dt.UTC)
    grouped = (
        events_for(user)
        .filter(time__gte=start)
        .annotate(day=TruncDate("time", tzinfo=dt.UTC))
        .order_by()
        .values("day", "outcome")
        .annotate(n=Count("id"))
    )
    done: dict[dt.date, int] = defaultdict(int)
    problems: dict[dt.date, int] = defaultdict(int)
    for row in grouped:
        target = problems if row["outcome"] in (Outcome.REFUSED, Outcome.FAILED) else done
        target[row["day"]] += row["n"]
    span = _days(today, days)
    return Trend(
        labels=[day.isoformat() for day in span],
        series=[
            Series("Succeeded", [done[day] for day in span]),
            Series("Refused or failed", [problems[day] for day in span]),
        ],
    )


def keys_by_state_per_day(user: Viewer, *, today: dt.date | None = None, days: int = DAYS) -> Trend:
    """Keys per portal state at the end of each day (DELETED left out: it only grows)."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    start = dt.datetime.combine(today - dt.timedelta(days=days - 2), dt.time.min, tzinfo=dt.UTC)
    counts = dict(keys_by_state(user))
    changes = (
        events_for(user)
        .filter(time__gte=start, key_id__isnull=False, outcome=Outcome.SUCCESS)
        .exclude(state_after="")
        .exclude(state_before=F("state_after"))
        .annotate(day=TruncDate("time", tzinfo=dt.UTC))
        .order_by()
        .values("day", "state_before", "state_after")
        .annotate(n=Count("id"))
    )
    by_day: dict[dt.date, list[tuple[str, str, int]]] = defaultdict(list)
    for row in changes:
        by_day[row["day"]].append((row["state_before"], row["state_after"], row["n"]))
    states = [state for state in KeyState if state != KeyState.DELETED]
    span = _days(today, days)
    at_end: dict[dt.date, dict[str, int]] = {}
    for day in reversed(span):
        at_end[day] = dict(counts)
        for before, after, n in by_day.get(day, ()):  # undo the day's changes: the day before's end
            counts[after] = counts.get(after, 0) - n
            if before:
                counts[before] = counts.get(before, 0) + n
    return Trend(
        labels=[day.isoformat() for day in span],
        series=[Series(state.label, [max(0, at_end[day].get(state.value, 0)) for day in span]) for state in states],
    )


AGE_BUCKETS: list[tuple[str, int, int | None]] = [
    ("Under 30 days", 0, 30),
    ("30-89 days", 30, 90),
    ("90-179 days", 90, 180),
    ("180-364 days", 180, 365),
    ("1-2 years", 365, 730),
    ("2 years or more", 730, None),
]


def material_age(user: Viewer, *, now: dt.datetime | None = None) -> Trend:
    """Live keys (active or inactive) by the age of their current material (one query)."""
    now = now or timezone.now()
    counts: dict[str, Count] = {}
    for index, (_, low, high) in enumerate(AGE_BUCKETS):
        q = Q(material_since__lte=now - dt.timedelta(days=low))
        if high is not None:
            q &= Q(material_since__gt=now - dt.timedelta(days=high))
        counts[f"b{index}"] = Count("id", filter=q)
    totals = material_facts(keys_for(user).filter(state__in=LIVE_STATES)).aggregate(**counts)
    return Trend(
        labels=[label for label, _, _ in AGE_BUCKETS],
        series=[Series("Keys", [totals[f"b{index}"] for index in range(len(AGE_BUCKETS))])],
    )
