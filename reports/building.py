"""A report request: its parameters checked, its rows, and the audit head it was built from.

Pages and the API both go through :func:`build`, so they accept the same parameters and
produce the same report; :mod:`reports.rendering` turns one into CSV or PDF.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.chain import current_head
from keystores.models import Keystore
from keystores.selectors import Viewer, keystores_for
from reports import selectors
from reports.selectors import Column

KINDS = {
    "inventory": "Key inventory",
    "rotation-compliance": "Rotation compliance",
    "activity": "Activity",
}
FORMATS = ("csv", "pdf")
DEFAULT_ACTIVITY_DAYS = 30


@dataclass(frozen=True)
class Params:
    kind: str
    format: str
    keystore: Keystore | None
    since: dt.datetime
    until: dt.datetime


@dataclass(frozen=True)
class Report:
    """What a rendered report says about itself, and its rows (an iterator: read them once)."""

    kind: str
    title: str
    generated_at: dt.datetime
    head_seq: int
    head_hash: str
    scope: str
    columns: Sequence[Column]
    csv_columns: Sequence[str]
    rows: Iterator[dict[str, Any]]

    @property
    def filename_stem(self) -> str:
        return f"{self.kind}-{self.generated_at:%Y%m%dT%H%M%SZ}-audit-{self.head_seq}"


def _instant(value: str, name: str, *, end_of_day: bool) -> dt.datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise ValidationError({name: ["Use a date (YYYY-MM-DD) or an ISO 8601 date and time."]})
        parsed = dt.datetime.combine(day, dt.time.max if end_of_day else dt.time.min)
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)


QUERY_FIELDS = ("format", "keystore", "since", "until")


def parse(
    user: Viewer, kind: str, query: Mapping[str, str], *, default_format: str = "csv", blank_is_absent: bool = True
) -> Params:
    """The report's parameters from a query string; ``ValidationError`` naming each bad field.

    A page's form sends its empty fields (``?since=&until=``), which mean "not given"; the API's
    schema documents no empty values, so there (``blank_is_absent=False``) an empty one is a 400.
    """
    errors: dict[str, list[str]] = {}
    if not blank_is_absent:
        errors.update({name: ["May not be blank."] for name in QUERY_FIELDS if query.get(name, None) == ""})
    if kind not in KINDS:
        errors["kind"] = [f"Choose one of: {', '.join(KINDS)}."]
    fmt = query.get("format") or default_format
    if fmt not in FORMATS:
        errors["format"] = [f"Choose one of: {', '.join(FORMATS)}."]
    keystore = None
    if query.get("keystore"):
        try:
            keystore = keystores_for(user).filter(pk=uuid.UUID(query["keystore"])).first()
        except ValueError:
            keystore = None
        if keystore is None:
            errors["keystore"] = ["No keystore with this ID that you can see."]
    now = timezone.now()
    since = now - dt.timedelta(days=DEFAULT_ACTIVITY_DAYS)
    until = now
    for name in ("since", "until"):
        if query.get(name):
            try:
                value = _instant(query[name], name, end_of_day=name == "until")
            except ValidationError as exc:
                errors.update(exc.message_dict)
                continue
            if name == "since":
                since = value
            else:
                until = value
    if "since" not in errors and "until" not in errors and since > until:
        errors["until"] = ["Must not be before since."]
    if errors:
        raise ValidationError(errors)
    return Params(kind=kind, format=fmt, keystore=keystore, since=since, until=until)


def build(user: Viewer, params: Params) -> Report:
    """The report: the audit head is read first, so every row is at most as new as the head it names."""
    head_seq, head_hash = current_head()
    now = timezone.now()
    keystore_id = params.keystore.pk if params.keystore else None
    rows: Iterator[dict[str, Any]]  # generators: nothing is read before rendering starts
    scope = f"keystore {params.keystore.name}" if params.keystore else "every keystore you can see"
    if params.kind == "inventory":
        rows = selectors.inventory(user, keystore_id=keystore_id, now=now)
    elif params.kind == "rotation-compliance":
        rows = selectors.rotation_compliance(user, keystore_id=keystore_id, now=now)
    else:
        scope += f", {params.since:%Y-%m-%d %H:%M} to {params.until:%Y-%m-%d %H:%M} UTC"
        rows = selectors.activity(
            user, since=params.since, until=params.until, keystore_id=keystore_id, up_to_seq=head_seq
        )
    pdf_columns, csv_columns = selectors.columns_for(params.kind)
    return Report(
        kind=params.kind,
        title=KINDS[params.kind],
        generated_at=now,
        head_seq=head_seq,
        head_hash=head_hash,
        scope=scope,
        columns=pdf_columns,
        csv_columns=csv_columns,
        rows=rows,
    )
