"""Streamed export of the audit trail as CSV or JSON Lines, in constant memory.

Rows are read in keyset batches (``seq > last``, oldest first, up to the newest
event when the export started), so memory stays flat whatever the size of the
trail, no long-lived cursor or transaction is held, and every batch is an index
range scan. On PostgreSQL the JSON Lines documents are rendered by the server.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC
from typing import Any

from django.db import connection
from django.db.models import Max, QuerySet, TextField
from django.db.models.expressions import RawSQL

from audit.chain import CHAINED_FIELDS
from audit.models import AuditEvent

BATCH_SIZE = 2000
# Event times in the API and exports: UTC, always with microseconds.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}
CSV_COLUMNS = (*CHAINED_FIELDS, "hash")
# Spreadsheet applications run cells starting with these as formulas (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def rows(queryset: QuerySet[AuditEvent], *, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
    """The events of ``queryset`` as value dicts, oldest first, ``batch_size`` (default BATCH_SIZE) at a time."""
    size = batch_size or BATCH_SIZE
    queryset = queryset.order_by()
    last_seq = queryset.aggregate(last=Max("seq"))["last"]
    if last_seq is None:
        return
    after = 0
    while after < last_seq:
        batch = list(queryset.filter(seq__gt=after, seq__lte=last_seq).order_by("seq").values(*CSV_COLUMNS)[:size])
        if not batch:
            return
        yield from batch
        after = batch[-1]["seq"]


def document(row: dict[str, Any]) -> dict[str, Any]:
    """An event row in the API's shape (:class:`audit.serializers.AuditEventSerializer`)."""
    return {
        "seq": row["seq"],
        "time": row["time"].astimezone(UTC).strftime(TIME_FORMAT),
        "actor": {"iss": row["actor_iss"], "sub": row["actor_sub"], "name": row["actor_name"]},
        "source_ip": row["source_ip"],
        "request_id": row["request_id"],
        "operation": row["operation"],
        "keystore": (
            {"id": str(row["keystore_id"]), "name": row["keystore_name"]} if row["keystore_id"] is not None else None
        ),
        "key": (
            {"id": str(row["key_id"]), "alias": row["key_alias"], "arn": row["key_arn"]}
            if row["key_id"] is not None
            else None
        ),
        "outcome": row["outcome"],
        "reason": row["reason"],
        "state_before": row["state_before"],
        "state_after": row["state_after"],
        "kms_request_ids": row["kms_request_ids"],
        "error": row["error"],
        "details": row["details"],
        "hash": row["hash"],
    }


def _chunked(lines: Iterator[bytes], size: int = 500) -> Iterator[bytes]:
    # Fewer, larger writes: one per event would cost a WSGI round per line.
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield b"".join(chunk)
            chunk.clear()
    if chunk:
        yield b"".join(chunk)


# The same document rendered by PostgreSQL: at millions of events that leaves this
# process only to pass text along. The time format is the serializer's TIME_FORMAT.
_PG_DOCUMENT = """json_build_object(
    'seq', "seq",
    'time', to_char("time" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'actor', json_build_object('iss', "actor_iss", 'sub', "actor_sub", 'name', "actor_name"),
    'source_ip', host("source_ip"),
    'request_id', "request_id",
    'operation', "operation",
    'keystore', CASE WHEN "keystore_id" IS NULL THEN NULL
        ELSE json_build_object('id', "keystore_id", 'name', "keystore_name") END,
    'key', CASE WHEN "key_id" IS NULL THEN NULL
        ELSE json_build_object('id', "key_id", 'alias', "key_alias", 'arn', "key_arn") END,
    'outcome', "outcome",
    'reason', "reason",
    'state_before', "state_before",
    'state_after', "state_after",
    'kms_request_ids', "kms_request_ids",
    'error', "error",
    'details', "details",
    'hash', "hash"
)::text"""


def _pg_lines(queryset: QuerySet[AuditEvent], batch_size: int) -> Iterator[bytes]:
    # A constant expression with no parameters: nothing from the request reaches the SQL text.
    document_sql = RawSQL(_PG_DOCUMENT, (), output_field=TextField())  # noqa: S611
    documents = queryset.order_by().annotate(document=document_sql)
    last_seq = queryset.order_by().aggregate(last=Max("seq"))["last"]
    after = 0
    while last_seq is not None and after < last_seq:
        batch = list(
            documents.filter(seq__gt=after, seq__lte=last_seq)
            .order_by("seq")
            .values_list("seq", "document")[:batch_size]
        )
        if not batch:
            return
        yield ("\n".join(line for _, line in batch) + "\n").encode()
        after = batch[-1][0]


def jsonl(queryset: QuerySet[AuditEvent], *, batch_size: int | None = None) -> Iterator[bytes]:
    """One JSON document per line and event, in the API's shape (rendered by PostgreSQL there)."""
    if connection.vendor == "postgresql":
        return _pg_lines(queryset, batch_size or BATCH_SIZE)
    return _chunked(
        json.dumps(document(row), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        for row in rows(queryset, batch_size=batch_size)
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def csv_stream(header: Sequence[str], records: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """A header and one CSV row per record, streamed; lists and dicts as JSON, formula-looking cells defused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return data

    def lines() -> Iterator[bytes]:
        writer.writerow(header)
        yield flush()
        for record in records:
            writer.writerow([_cell(value) for value in record])
            yield flush()

    return _chunked(lines())


def csv_lines(queryset: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """A header and one flat row per event (see :func:`csv_stream`)."""
    return csv_stream(CSV_COLUMNS, ([row[name] for name in CSV_COLUMNS] for row in rows(queryset)))
