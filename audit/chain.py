"""The audit hash chain: canonical encoding, HMAC, and streaming verification."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from audit.models import AuditEvent

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "seq",
    "time",
    "actor_iss",
    "actor_sub",
    "actor_name",
    "source_ip",
    "request_id",
    "operation",
    "keystore_id",
    "keystore_name",
    "key_id",
    "key_alias",
    "key_arn",
    "outcome",
    "reason",
    "state_before",
    "state_after",
    "kms_request_ids",
    "error",
    "details",
)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool | list | dict):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def canonical(values: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers: its chained fields as sorted, compact JSON."""
    return json.dumps(
        {name: _plain(values[name]) for name in CHAINED_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def event_hash(previous_hash: str, values: dict[str, Any]) -> str:
    key = settings.BYOK_AUDIT_KEY.encode()
    return hmac.new(key, previous_hash.encode() + b"\n" + canonical(values), hashlib.sha256).hexdigest()


def values_of(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in CHAINED_FIELDS}


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None
    head_seq: int
    head_hash: str
    problem: str = ""


def verify_rows(rows: Iterable[dict[str, Any]], *, expected_head: tuple[int, str] | None = None) -> Verification:
    """Walk events in ``seq`` order and return the first one that breaks the chain.

    ``rows`` are dicts with the chained fields plus ``hash``; an iterator keeps
    memory flat. ``expected_head`` (a published ``(seq, hash)``) detects a tail
    cut off after publication.
    """
    previous = GENESIS
    expected_seq = 1
    count = 0
    for row in rows:
        if row["seq"] != expected_seq:
            return Verification(False, count, expected_seq, expected_seq - 1, previous, "missing or extra event")
        if not hmac.compare_digest(event_hash(previous, row), row["hash"]):
            return Verification(False, count, row["seq"], expected_seq - 1, previous, "hash mismatch")
        previous = row["hash"]
        expected_seq += 1
        count += 1
    last_seq = expected_seq - 1
    if expected_head is not None:
        head_seq, head_hash = expected_head
        if last_seq < head_seq:
            return Verification(False, count, last_seq + 1, last_seq, previous, "chain shorter than the published head")
        if head_seq > 0 and not _hash_at(head_seq, head_hash):
            return Verification(False, count, head_seq, last_seq, previous, "published head does not match")
    return Verification(True, count, None, last_seq, previous)


def _hash_at(seq: int, expected: str) -> bool:
    stored = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    return stored is not None and hmac.compare_digest(stored, expected)


def stream_rows(chunk_size: int = 5000) -> Iterator[dict[str, Any]]:
    """Every event in chain order, fetched in chunks (server-side cursor on PostgreSQL)."""
    return AuditEvent.objects.order_by("seq").values(*CHAINED_FIELDS, "hash").iterator(chunk_size=chunk_size)


def verify(*, expected_head: tuple[int, str] | None = None) -> Verification:
    return verify_rows(stream_rows(), expected_head=expected_head)
