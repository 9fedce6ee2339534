"""The audit hash chain: canonical encoding, HMAC, and streaming verification.

Each event's ``hash`` is ``HMAC-SHA-256(BYOK_AUDIT_KEY, previous_hash + "\\n" +
canonical(event))``, the first event chaining onto :data:`GENESIS`. The key lives
outside the database, so someone who can write the table cannot forge a chain.
Verification streams the table in ``seq`` order and keeps only the previous
hash in memory; on PostgreSQL the server renders each row's canonical bytes, so
this process only computes HMACs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection

from audit.models import AuditEvent, AuditHead

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
VERIFY_CHUNK_SIZE = 1_000
# Chains at least this long are verified in parallel parts (see verify()).
PARALLEL_FROM = 100_000
VERIFY_PARTS = 2
# Compact-but-spaced JSON, unescaped non-ASCII: the text PostgreSQL's json/jsonb output produces.
_ENCODER = json.JSONEncoder(separators=(", ", ": "), ensure_ascii=False, check_circular=False)


def _jsonb_key(name: str) -> tuple[int, bytes]:
    # jsonb keeps object keys ordered by length in bytes, then bytewise.
    encoded = name.encode()
    return (len(encoded), encoded)


def _jsonb_ordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _jsonb_ordered(value[name]) for name in sorted(value, key=_jsonb_key)}
    if isinstance(value, list):
        return [_jsonb_ordered(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dict | list):
        return _jsonb_ordered(value)
    if isinstance(value, datetime):
        # Always UTC with microseconds, as stream_links has PostgreSQL print it.
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def canonical(values: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers.

    A JSON array of the chained fields in :data:`CHAINED_FIELDS` order: times as
    UTC ISO 8601 with microseconds, ids and addresses as strings, nested objects
    with their keys in jsonb order, separators ``", "`` and ``": "``. That is,
    byte for byte, what PostgreSQL's ``json_build_array(...)::text`` renders for
    the stored row, so verification on PostgreSQL lets the server build it and
    only hashes here. :func:`audit.services.record` stores only values that
    survive that round trip (normalised addresses, no floats, no NUL).
    """
    return _ENCODER.encode([_plain(values[name]) for name in CHAINED_FIELDS]).encode()


def _keyed_mac() -> hmac.HMAC:
    return hmac.new(settings.BYOK_AUDIT_KEY.encode(), digestmod=hashlib.sha256)


def _keyed_link(base: hmac.HMAC, previous_hash: str, canonical_bytes: bytes) -> str:
    mac = base.copy()
    mac.update(previous_hash.encode() + b"\n" + canonical_bytes)
    return mac.hexdigest()


def event_hash(previous_hash: str, values: dict[str, Any]) -> str:
    """The hash of an event with chained ``values`` appended after ``previous_hash``."""
    return _keyed_link(_keyed_mac(), previous_hash, canonical(values))


def hasher() -> Callable[[str, dict[str, Any]], str]:
    """:func:`event_hash` with the key schedule done once, for hashing many events in a row."""
    base = _keyed_mac()

    def hash_one(previous_hash: str, values: dict[str, Any]) -> str:
        return _keyed_link(base, previous_hash, canonical(values))

    return hash_one


def values_of(event: AuditEvent) -> dict[str, Any]:
    """The chained fields of a saved event."""
    return {name: getattr(event, name) for name in CHAINED_FIELDS}


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain.

    ``first_bad`` is the sequence number of the first event that is missing, out of
    place or does not hash; ``head_seq``/``head_hash`` are the last good link.
    """

    ok: bool
    events: int
    first_bad: int | None
    head_seq: int
    head_hash: str
    problem: str = ""


# One stored event as verification sees it: (seq, stored hash, canonical bytes).
Link = tuple[int, str, bytes]


def verify_links(
    links: Iterable[Link],
    *,
    expected_heads: Iterable[tuple[int, str]] = (),
    start: tuple[int, str] = (1, GENESIS),
    end_seq: int | None = None,
) -> Verification:
    """Walk events in ``seq`` order and report the first one that breaks the chain.

    An iterator of ``links`` keeps memory flat. Each of ``expected_heads`` (a
    published ``(seq, hash)``) must be a link of the chain: that detects a tail
    cut off after it was published, which the chain alone cannot (a shorter chain
    is still a valid chain). A part of the chain can be walked on its own: from
    ``start`` (its first ``seq`` and the stored hash before it) up to ``end_seq``
    (which must then be its last event); without ``end_seq`` it runs to the end.
    """
    heads = {seq: head_hash for seq, head_hash in expected_heads if seq > 0}
    base = _keyed_mac()
    compare = hmac.compare_digest
    expected_seq, previous = start
    for seq, stored, canonical_bytes in links:
        if seq != expected_seq:
            problem = f"expected event #{expected_seq}, found #{seq}: an event is missing or was inserted"
            return Verification(False, expected_seq - 1, expected_seq, expected_seq - 1, previous, problem)
        if not compare(_keyed_link(base, previous, canonical_bytes), stored):
            problem = f"event #{seq} does not match its hash: edited, forged or moved"
            return Verification(False, expected_seq - 1, seq, expected_seq - 1, previous, problem)
        published = heads.get(seq)
        if published is not None and not compare(published, stored):
            problem = f"event #{seq} differs from the published head: the chain was rewritten after publication"
            return Verification(False, expected_seq - 1, seq, expected_seq - 1, previous, problem)
        previous = stored
        expected_seq += 1
    last_seq = expected_seq - 1
    if end_seq is not None and last_seq < end_seq:
        problem = f"expected event #{expected_seq}, found none: an event is missing"
        return Verification(False, last_seq, expected_seq, last_seq, previous, problem)
    if end_seq is None and heads and max(heads) > last_seq:
        problem = f"the chain ends at #{last_seq} but #{max(heads)} was published: events were cut off"
        return Verification(False, last_seq, last_seq + 1, last_seq, previous, problem)
    return Verification(True, last_seq, None, last_seq, previous)


# On PostgreSQL the server renders the canonical text itself (see canonical()),
# which keeps the hot loop to one HMAC per event.
_PG_EXPRESSIONS = {
    "time": """to_char("time" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""",
    "source_ip": 'host("source_ip")',
    "keystore_id": '"keystore_id"::text',
    "key_id": '"key_id"::text',
}
_PG_CANONICAL = "json_build_array({})::text".format(
    ", ".join(_PG_EXPRESSIONS.get(name, f'"{name}"') for name in CHAINED_FIELDS)
)


def _pg_links(chunk_size: int, first: int, last: int | None) -> Generator[Link]:
    import psycopg

    table = AuditEvent._meta.db_table
    bounds = '"seq" >= %s' + (' AND "seq" <= %s' if last is not None else "")
    query = f'SELECT "seq", "hash", {_PG_CANONICAL} FROM "{table}" WHERE {bounds} ORDER BY "seq"'  # noqa: S608
    params = (first,) if last is None else (first, last)
    if connection.in_atomic_block:
        # Inside a transaction, a named cursor: stopping early at a bad event just closes
        # it, where abandoning a stream cancels the query and aborts the transaction.
        with connection.chunked_cursor() as cursor:
            cursor.execute(query, params)
            while rows := cursor.fetchmany(chunk_size):
                for seq, stored, text in rows:
                    yield seq, stored, text.encode()
        return
    # Otherwise streamed: the server keeps producing rows while this process hashes, and
    # libpq hands them over ``chunk_size`` at a time (row by row before libpq 17), so
    # memory stays flat either way.
    size = chunk_size if psycopg.pq.version() >= 170000 else 1
    with connection.cursor() as cursor:
        for seq, stored, text in cursor.cursor.stream(query, params, size=size):
            yield seq, stored, text.encode()


def _orm_links(chunk_size: int, first: int, last: int | None) -> Generator[Link]:
    events = AuditEvent.objects.filter(seq__gte=first).order_by("seq")
    if last is not None:
        events = events.filter(seq__lte=last)
    for row in events.values(*CHAINED_FIELDS, "hash").iterator(chunk_size=chunk_size):
        yield row["seq"], row["hash"], canonical(row)


def stream_links(chunk_size: int | None = None, *, first: int = 1, last: int | None = None) -> Generator[Link]:
    """The events from ``first`` to ``last`` (default: the end) in chain order, ``chunk_size`` at a time.

    On PostgreSQL the server renders each canonical text and streams the rows, so
    memory does not grow with the table and no model instances are built:
    verification is a hot loop over millions of rows. Elsewhere (SQLite) it is the
    ORM's chunked iterator.
    """
    size = chunk_size or VERIFY_CHUNK_SIZE
    return (_pg_links if connection.vendor == "postgresql" else _orm_links)(size, first, last)


def current_head() -> tuple[int, str]:
    """The stored ``(seq, hash)`` of the newest event; ``(0, GENESIS)`` for an empty trail."""
    head = AuditHead.objects.filter(pk=1).values_list("seq", "hash").first()
    if head is None or head[0] == 0:
        return (0, GENESIS)
    return (head[0], head[1])


def _verify_part(first: int, last: int | None, heads: list[tuple[int, str]]) -> Verification:
    """One part of the chain, in a worker thread with its own database connection."""
    try:
        before = GENESIS
        if first > 1:
            stored = AuditEvent.objects.filter(seq=first - 1).values_list("hash", flat=True).first()
            if stored is None:
                # The part before reports the same missing event.
                problem = f"expected event #{first - 1}, found none: an event is missing"
                return Verification(False, first - 2, first - 1, first - 2, GENESIS, problem)
            before = stored
        with closing(stream_links(first=first, last=last)) as links:
            return verify_links(links, expected_heads=heads, start=(first, before), end_seq=last)
    finally:
        connection.close()


def _verify_in_parts(heads: list[tuple[int, str]], newest: int, parts: int) -> Verification:
    # Each part starts from the stored hash of the event before it, and that event is
    # checked by the part before: together the parts check every link of the chain.
    # The server renders canonical text for each part in its own backend process.
    bounds = [1 + newest * n // parts for n in range(parts)] + [newest + 1]
    ranges = [(bounds[n], bounds[n + 1] - 1 if n < parts - 1 else None) for n in range(parts)]
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="audit-verify") as pool:
        futures = [pool.submit(_verify_part, first, last, heads) for first, last in ranges]
        results = [future.result() for future in futures]
    bad = [result for result in results if not result.ok]
    if bad:
        return min(bad, key=lambda result: result.first_bad or 0)
    return Verification(True, results[-1].events, None, results[-1].head_seq, results[-1].head_hash)


def verify(*, expected_head: tuple[int, str] | None = None) -> Verification:
    """Verify the whole chain against the stored head and, if given, a published head.

    The stored head (read first, so concurrent appends are harmless) catches a
    naive deletion of the newest events; only a head published outside the
    database catches someone who also rewound the stored head.

    On PostgreSQL, outside a transaction, long chains are verified in
    ``VERIFY_PARTS`` parts in parallel (each with its own connection): the server's
    rendering of canonical text, not the HMACs, is the slow part.
    """
    heads = [current_head()]
    if expected_head is not None:
        heads.append(expected_head)
    newest = heads[0][0]
    parallel = connection.vendor == "postgresql" and not connection.in_atomic_block
    if parallel and VERIFY_PARTS > 1 and newest >= PARALLEL_FROM:
        return _verify_in_parts(heads, newest, VERIFY_PARTS)
    # Closed explicitly: a walk that stops at a bad event must not leave the query running.
    with closing(stream_links()) as links:
        return verify_links(links, expected_heads=heads)
