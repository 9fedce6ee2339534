"""Audit trail at scale, on PostgreSQL (issue 4): verify, export and list at 1,000,000 events.

``run()`` creates two databases next to ``DATABASE_URL``'s (``byok_bench`` with
``BENCH_AUDIT_EVENTS`` events, default 1,000,000, and ``byok_bench_small`` with
1,000), migrates them, bulk-loads valid chained events (hashes computed in Python,
rows sent with ``COPY``), then measures each figure in a fresh worker process
(``python -m bench.audit_bench PHASE``) so that peak-memory figures belong to that
phase alone:

- ``verify``: :func:`audit.chain.verify` over the whole chain, events/s, the
  growth of peak RSS while verifying and the Python heap's peak (flat: the same
  at 1,000 and 1,000,000);
- ``export``: ``GET /api/v1/audit/events/export/?format=jsonl`` streamed to the end
  through the full Django stack, events/s and peak RSS growth;
- ``list``: ``GET /api/v1/audit/events/`` (first page, a deep page, and filtered or
  scoped variants): queries per request and median latency, 1,000,000 vs 1,000.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._support import recreate_database, run_phase

LARGE_DB, SMALL_DB = "byok_bench", "byok_bench_small"
SMALL_EVENTS = 1_000
KEYSTORES = 10
KEYS_PER_KEYSTORE = 50
ACTORS = 40
LIST_RUNS = 50
LIST_ROUNDS = 2
ROOT, AUDITOR = "bench-root", "bench-auditor"


def _events() -> int:
    return int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))


def _worker(phase: str, database: str, *args: str) -> dict[str, Any]:
    return run_phase("audit_bench", database, phase, *args)


def run() -> list[dict[str, Any]]:
    """Load both databases, measure every phase, and return the rows for BENCHMARKS.md."""
    large_n = _events()
    loads = {}
    for database, count in ((LARGE_DB, large_n), (SMALL_DB, SMALL_EVENTS)):
        recreate_database(database)
        loads[database] = _worker("load", database, str(count))
    verify_large, verify_small = _worker("verify", LARGE_DB), _worker("verify", SMALL_DB)
    # Memory baseline: a tenth of the same trail (one keystore), in the same database.
    export_large, export_tenth = _worker("export", LARGE_DB), _worker("export", LARGE_DB, "one-keystore")
    # Alternating rounds, best median of each side: the machine's other load drifts.
    rounds = [(_worker("list", LARGE_DB), _worker("list", SMALL_DB)) for _ in range(LIST_ROUNDS)]
    list_large, list_small = (
        {scenario: min((r[side][scenario] for r in rounds), key=lambda m: m["median_ms"]) for scenario in rounds[0][0]}
        for side in (0, 1)
    )

    n = f"{large_n:,}"
    rows: list[dict[str, Any]] = [
        {
            "figure": f"audit: bulk load {n} chained events (hash in Python + COPY)",
            "value": large_n / loads[LARGE_DB]["seconds"],
            "unit": "events/s",
            "note": f"{loads[LARGE_DB]['seconds']:.1f} s including migrate and indexing; setup only",
        },
        {
            "figure": f"audit: verify {n} events",
            "value": verify_large["events_per_second"],
            "unit": "events/s",
            "baseline": 100_000,
            "ratio": verify_large["events_per_second"] / 100_000,
            "note": f"ok={verify_large['ok']}, {verify_large['seconds']:.1f} s; baseline = issue 4 target",
        },
        {
            "figure": f"audit: verify {n} events, peak RSS growth",
            "value": verify_large["rss_growth_mb"],
            "unit": "MiB",
            "baseline": verify_small["rss_growth_mb"],
            "ratio": _ratio(verify_large["rss_growth_mb"], verify_small["rss_growth_mb"]),
            "note": f"baseline: verify {SMALL_EVENTS:,} events; process peak {verify_large['rss_peak_mb']:.0f} MiB",
        },
        {
            "figure": f"audit: verify {n} events, Python heap peak (tracemalloc)",
            "value": verify_large["heap_peak_mb"],
            "unit": "MiB",
            "baseline": verify_small["heap_peak_mb"],
            "ratio": verify_large["heap_peak_mb"] / verify_small["heap_peak_mb"],
            "note": f"baseline: verify {SMALL_EVENTS:,} events",
        },
        {
            "figure": f"audit: export {n} events as JSON Lines (API, streamed)",
            "value": export_large["events_per_second"],
            "unit": "events/s",
            "note": f"{export_large['lines']:,} lines, {export_large['bytes'] / 2**20:.0f} MiB "
            f"in {export_large['seconds']:.1f} s",
        },
        {
            "figure": f"audit: export {n} events as JSON Lines, peak RSS growth",
            "value": export_large["rss_growth_mb"],
            "unit": "MiB",
            "baseline": export_tenth["rss_growth_mb"],
            "ratio": _ratio(export_large["rss_growth_mb"], export_tenth["rss_growth_mb"]),
            "note": f"baseline: export of one keystore's {export_tenth['lines']:,} events from the same trail",
        },
    ]
    for scenario, large in list_large.items():
        small = list_small[scenario]
        rows.append(
            {
                "figure": f"audit: list endpoint at {n} events, {scenario}",
                "value": large["median_ms"],
                "unit": "ms (median)",
                "baseline": small["median_ms"],
                "ratio": large["median_ms"] / small["median_ms"],
                "note": f"baseline: {SMALL_EVENTS:,} events; queries {large['queries']} vs {small['queries']}"
                f" (target: equal, ratio ≤ 3)",
            }
        )
    return rows


def _ratio(value: float, baseline: float) -> float | None:
    return value / baseline if baseline > 0.5 else None


# --- worker phases (run in a fresh process with Django set up on one database) -----


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(count: int) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from audit.chain import CHAINED_FIELDS, GENESIS, hasher
    from audit.models import AuditHead
    from byok_portal.vocabulary import Operation
    from keystores.models import Keystore, Membership, Role

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    keystores = [
        Keystore.objects.create(
            name=f"Keystore {n}",
            aws_account_id=f"{n + 100000000000}",
            region="eu-west-1",
            role_arn=f"arn:aws:iam::{n + 100000000000}:role/byok",
        )
        for n in range(KEYSTORES)
    ]
    User.objects.create_superuser(username=ROOT, password="x" * 16)
    auditor = User.objects.create_user(username=AUDITOR, password="x" * 16)
    Membership.objects.create(keystore=keystores[0], user=auditor, role=Role.AUDITOR)
    keys = [[str(uuid.uuid4()) for _ in range(KEYS_PER_KEYSTORE)] for _ in keystores]
    operations = [op.value for op in Operation]
    hash_one = hasher()
    previous = GENESIS
    start_time = datetime.now(UTC) - timedelta(milliseconds=count * 10)
    with connection.cursor() as cursor:
        # Loading first and indexing after is several times faster than maintaining
        # seven indexes row by row; the definitions are the migrations' own.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_auditevent' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        with cursor.cursor.copy(f"COPY audit_auditevent ({', '.join(CHAINED_FIELDS)}, hash) FROM STDIN") as copy:
            lines: list[str] = []
            for seq in range(1, count + 1):
                values = _event(seq, start_time, keystores, keys, operations)
                previous = hash_one(previous, values)
                lines.append(_copy_line(values, previous))
                if len(lines) == 5000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        for _, definition in indexes:
            cursor.execute(definition)
        AuditHead.objects.create(pk=1, seq=count, hash=previous, time=datetime.fromisoformat(values["time"]))
        cursor.execute("ANALYZE")
    return {"seconds": time.monotonic() - started}


def _event(seq: int, start_time: datetime, keystores: list[Any], keys: list[list[str]], operations: list[str]) -> dict:
    """One realistic event; times, ids and addresses as text, as the chain renders them."""
    store = seq % KEYSTORES
    keystore = keystores[store]
    key_id = keys[store][seq % KEYS_PER_KEYSTORE]
    actor = seq % ACTORS
    refused = seq % 97 == 0
    return {
        "seq": seq,
        "time": (start_time + timedelta(milliseconds=seq * 10)).isoformat(timespec="microseconds"),
        "actor_iss": "https://idp.example.com",
        "actor_sub": f"subject-{actor}",
        "actor_name": f"Person {actor}",
        "source_ip": f"10.0.{actor}.{seq % 250 + 1}",
        "request_id": f"{seq:032x}",
        "operation": operations[seq % len(operations)],
        "keystore_id": str(keystore.pk),
        "keystore_name": keystore.name,
        "key_id": key_id,
        "key_alias": f"alias/key-{seq % KEYS_PER_KEYSTORE}",
        "key_arn": f"arn:aws:kms:eu-west-1:{keystore.aws_account_id}:key/{key_id}",
        "outcome": "refused" if refused else "success",
        "reason": "invalid_state" if refused else "",
        "state_before": "ACTIVE",
        "state_after": "ACTIVE" if refused else "INACTIVE",
        "kms_request_ids": [] if refused else [f"{seq * 7:08x}-0000-4000-8000-000000000000"],
        "error": "Key is in state ACTIVE." if refused else "",
        "details": {"name": f"key {seq % KEYS_PER_KEYSTORE}", "tags": {"team": "payments"}},
    }


def _copy_line(values: dict[str, Any], digest: str) -> str:
    from audit.chain import CHAINED_FIELDS

    # COPY's text format; the generated values hold no tab, newline or backslash to escape.
    cells = [
        json.dumps(values[name]) if name in ("kms_request_ids", "details") else str(values[name])
        for name in CHAINED_FIELDS
    ]
    return "\t".join((*cells, digest)) + "\n"


def _verify() -> dict[str, Any]:
    from audit import chain

    chain.current_head()  # connect and warm up outside the measurement
    before = _rss_mib()
    started = time.perf_counter()
    result = chain.verify()
    seconds = time.perf_counter() - started
    rss_growth, rss_peak = _rss_mib() - before, _rss_mib()
    # A second, untimed walk under tracemalloc: the Python heap's own peak.
    tracemalloc.start()
    chain.verify()
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {
        "ok": result.ok,
        "events": result.events,
        "seconds": seconds,
        "events_per_second": result.events / seconds,
        "rss_growth_mb": rss_growth,
        "rss_peak_mb": rss_peak,
        "heap_peak_mb": heap_peak,
    }


def _client(username: str) -> Any:
    from django.test import Client

    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(username=username), backend="django.contrib.auth.backends.ModelBackend")
    return client


def _export(scope: str) -> dict[str, Any]:
    from audit.models import AuditEvent

    client = _client(ROOT)
    client.get("/api/v1/audit/events/?page_size=1")  # warm up outside the measurement
    url = "/api/v1/audit/events/export/?format=jsonl"
    if scope == "one-keystore":
        url += f"&keystore={AuditEvent.objects.filter(seq=1).values_list('keystore_id', flat=True).get()}"
    before = _rss_mib()
    started = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    return {
        "lines": lines,
        "bytes": size,
        "seconds": seconds,
        "events_per_second": lines / seconds,
        "rss_growth_mb": _rss_mib() - before,
    }


def _measure(client: Any, url: str) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    # Counted now: the next request resets Django's query log.
    query_count = len(queries.captured_queries)
    assert response.status_code == 200, response.content[:500]
    assert response.json()["results"], f"no events for {url}"
    timings = []
    for _ in range(LIST_RUNS):
        started = time.perf_counter()
        client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(timings), "queries": query_count}


def _list() -> dict[str, Any]:
    from audit.models import AuditEvent

    root, auditor = _client(ROOT), _client(AUDITOR)
    base = "/api/v1/audit/events/"
    # A deep page: the one after the event half-way down the trail.
    middle = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True)[AuditEvent.objects.count() // 2]
    deep_url = _cursor_url_before(base, middle)
    keystore = AuditEvent.objects.filter(seq=1).values_list("keystore_id", flat=True).get()
    return {
        "superuser, first page": _measure(root, base),
        "superuser, page half-way down": _measure(root, deep_url),
        "auditor of 1 of 10 keystores, first page": _measure(auditor, base),
        "filter keystore + outcome=refused": _measure(root, f"{base}?keystore={keystore}&outcome=refused"),
        "filter actor": _measure(root, f"{base}?actor=subject-3"),
        "filter since/until (one hour)": _measure(root, _time_window_url(base)),
    }


def _cursor_url_before(base: str, seq: int) -> str:
    # DRF's cursor is base64 of a query string; position=seq with reverse=0 is "after seq, going down".
    import base64

    token = base64.b64encode(f"p={seq}".encode()).decode()
    return f"{base}?cursor={token}"


def _time_window_url(base: str) -> str:
    from urllib.parse import urlencode

    from audit.models import AuditEvent

    middle = AuditEvent.objects.order_by("seq").values_list("time", flat=True)[AuditEvent.objects.count() // 2]
    window = {
        "since": (middle - timedelta(minutes=30)).isoformat(),
        "until": (middle + timedelta(minutes=30)).isoformat(),
    }
    return f"{base}?{urlencode(window)}"


def _main(argv: list[str]) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    phase = argv[0]
    if phase == "load":
        result = _load(int(argv[1]))
    elif phase == "verify":
        result = _verify()
    elif phase == "export":
        result = _export(argv[1] if len(argv) > 1 else "all")
    elif phase == "list":
        result = _list()
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
