"""The daily cleanup at scale, on PostgreSQL (issue 8): 10,000 due keys among 100,000.

``run()`` recreates the database ``byok_bench_cleanup`` next to ``DATABASE_URL``'s,
migrates it and bulk-loads ``BENCH_CLEANUP_KEYS`` keys (default 100,000; a tenth of
them due for cleanup, the rest active or still within their deletion window;
sealed material is a dummy blob of the real size). Each measurement then runs in a
fresh process (``python -m bench.cleanup_bench PHASE``) so that its peak-memory
figure belongs to that phase alone:

- ``batched``: :func:`keys.jobs.cleanup.cleanup_due_keys` (the task's code) over every
  due key: keys/s, SQL statements by table (the cleanup's own statements per batch
  vs the audit trail's per key) and the growth of peak RSS;
- the same again over a quarter of the keys (reset to due), to show that memory
  depends on the batch size, not on how many keys are due;
- ``per-key``: :func:`keys.services.key_cleanup` called once per key, the obvious
  implementation, as the baseline for speed and statements per key.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._support import database_url, recreate_database, run_phase

DATABASE = "byok_bench_cleanup"
SEALED_SIZE = 60  # format byte + 12-byte nonce + 32-byte material + 16-byte tag, roughly
LOAD_CHUNK = 5_000


def _keys() -> int:
    return int(os.environ.get("BENCH_CLEANUP_KEYS", "100000"))


def _reset_to_due(count: int) -> None:
    """Put ``count`` cleaned keys back to "due" (the audit trail keeps its events: it is append-only)."""
    import psycopg

    with psycopg.connect(database_url(DATABASE), autocommit=True) as conn:
        conn.execute(
            "WITH due AS (UPDATE keys_key SET state = 'PENDING_DELETION' "
            "WHERE id IN (SELECT id FROM keys_key WHERE state = 'DELETED' ORDER BY id LIMIT %s) RETURNING id) "
            "UPDATE keys_keymaterial SET material_sealed = %s WHERE key_id IN (SELECT id FROM due)",
            (count, os.urandom(SEALED_SIZE)),
        )
        conn.execute("ANALYZE keys_key")


def _phase(name: str, *args: str) -> dict[str, Any]:
    return run_phase("cleanup_bench", DATABASE, name, *args)


def _ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 2) if baseline else None


def run() -> list[dict[str, Any]]:
    """Load the database, run each phase, and return the rows for BENCHMARKS.md."""
    total = _keys()
    due = total // 10
    recreate_database(DATABASE)
    loaded = _phase("load", str(total), str(due))
    batched = _phase("batched")
    # The heap is measured in runs of their own: tracemalloc slows the code it watches.
    _reset_to_due(due)
    traced = _phase("batched", "--trace")
    quarter = due // 4
    _reset_to_due(quarter)
    small = _phase("batched")
    _reset_to_due(quarter)
    small_traced = _phase("batched", "--trace")
    sample = max(due // 10, 1)
    _reset_to_due(sample)
    per_key = _phase("per-key")

    batches = batched["batches"]
    key_statements = batched["statements"]["keys_key"]
    audit_statements = batched["statements"]["audit"]
    per_key_statements = sum(per_key["statements"].values()) / per_key["cleaned"]
    batched_statements = sum(batched["statements"].values()) / batched["cleaned"]
    return [
        {
            "figure": f"cleanup throughput, {batched['cleaned']:,} due of {loaded['keys']:,} keys",
            "value": round(batched["keys_per_second"]),
            "unit": "keys/s",
            "baseline": round(per_key["keys_per_second"]),
            "ratio": _ratio(batched["keys_per_second"], per_key["keys_per_second"]),
            "note": f"batches of {batched['batch_size']}, {batches} batches in {batched['seconds']:.1f} s; "
            f"baseline: key_cleanup() once per key over {per_key['cleaned']:,} keys",
        },
        {
            "figure": "cleanup statements on keys_key",
            "value": key_statements,
            "unit": "statements",
            "baseline": per_key["statements"]["keys_key"] * batched["cleaned"] // per_key["cleaned"],
            "ratio": None,
            "note": f"{key_statements / batches:.2f} per batch (SELECT … FOR UPDATE SKIP LOCKED + one UPDATE, "
            f"+1 final empty SELECT) for {batches} batches; baseline extrapolated from per-key runs",
        },
        {
            "figure": "audit statements per batch",
            "value": round(audit_statements / batches, 2),
            "unit": "statements/batch",
            "baseline": round(per_key["statements"]["audit"] / per_key["cleaned"], 2),
            "ratio": None,
            "note": "audit.services.record_many(): lock head, one INSERT, UPDATE head, per batch of "
            f"{batched['cleaned'] // batches} events; baseline: statements per key with record() per key",
        },
        {
            "figure": "all statements per cleaned key",
            "value": round(batched_statements, 2),
            "unit": "statements/key",
            "baseline": round(per_key_statements, 2),
            "ratio": _ratio(batched_statements, per_key_statements),
            "note": f"batched total {sum(batched['statements'].values()):,} "
            f"({json.dumps(batched['statements'], sort_keys=True)})",
        },
        {
            "figure": f"peak RSS growth cleaning {batched['cleaned']:,} keys",
            "value": batched["rss_growth_mib"],
            "unit": "MiB",
            "baseline": small["rss_growth_mib"],
            "ratio": _ratio(batched["rss_growth_mib"], small["rss_growth_mib"]),
            "note": f"baseline: the same code cleaning {small['cleaned']:,} keys; bounded by the batch size",
        },
        {
            "figure": "peak Python heap while cleaning",
            "value": traced["heap_peak_mib"],
            "unit": "MiB",
            "baseline": small_traced["heap_peak_mib"],
            "ratio": _ratio(traced["heap_peak_mib"], small_traced["heap_peak_mib"]),
            "note": f"tracemalloc peak (separate runs), {traced['cleaned']:,} vs {small_traced['cleaned']:,} keys",
        },
    ]


# --- phases, each in its own process --------------------------------------------------


def _setup() -> None:
    import django

    django.setup()


def _load(total: int, due: int) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection

    from byok_portal.vocabulary import KeyState, KmsState
    from keys.models import Key, KeyMaterial
    from keystores.models import Keystore

    call_command("migrate", verbosity=0)
    keystore = Keystore.objects.create(
        name="bench", aws_account_id="111122223333", region="eu-west-1", role_arn="arn:aws:iam::111122223333:role/b"
    )
    now = datetime.now(UTC)
    started = time.monotonic()
    for offset in range(0, total, LOAD_CHUNK):
        rows = []
        versions = []
        for i in range(offset, min(offset + LOAD_CHUNK, total)):
            key_id = uuid.uuid4()
            if i < due:  # grace period over, spread over the last 30 days
                state, kms_state, deletion = (
                    KeyState.PENDING_DELETION,
                    KmsState.PENDING_DELETION,
                    now - timedelta(minutes=1 + (i * 43_200) // due),
                )
            elif i % 9 == 0:  # still within the waiting period: must be left alone
                state, kms_state, deletion = (
                    KeyState.PENDING_DELETION,
                    KmsState.PENDING_DELETION,
                    now + timedelta(days=1 + i % 29),
                )
            else:
                state, kms_state, deletion = KeyState.ACTIVE, KmsState.ENABLED, None
            rows.append(
                Key(
                    id=key_id,
                    keystore=keystore,
                    name=f"bench-{i}",
                    state=state,
                    kms_state=kms_state,
                    deletion_date=deletion,
                    kms_key_arn=f"arn:aws:kms:eu-west-1:111122223333:key/{key_id}",
                    kcv="ABCDEF",
                )
            )
            versions.append(
                KeyMaterial(key_id=key_id, version=1, material_sealed=os.urandom(SEALED_SIZE), kcv="ABCDEF")
            )
        Key.objects.bulk_create(rows)
        KeyMaterial.objects.bulk_create(versions)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE keys_key")
    return {"keys": total, "due": due, "seconds": round(time.monotonic() - started, 1)}


class StatementCounter:
    """Counts SQL statements by the table they touch, without keeping them (memory stays flat)."""

    def __init__(self) -> None:
        self.counts = {"keys_key": 0, "audit": 0, "other": 0}

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = "audit" if '"audit_' in sql else "keys_key" if '"keys_key"' in sql else "other"
        self.counts[kind] += 1
        return execute(sql, params, many, context)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(clean: Any, *, trace: bool = False) -> dict[str, Any]:
    import tracemalloc

    from django.db import connection

    from keys.models import Key

    Key.objects.exists()  # connect and warm up before the baseline is taken
    counter = StatementCounter()
    rss_before = _rss_mib()
    if trace:
        tracemalloc.start()
    started = time.monotonic()
    with connection.execute_wrapper(counter):
        outcome = clean()
    seconds = time.monotonic() - started
    heap_peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    tracemalloc.stop()
    return {
        **outcome,
        "seconds": round(seconds, 3),
        "keys_per_second": outcome["cleaned"] / seconds if seconds else 0.0,
        "statements": counter.counts,
        "rss_growth_mib": round(_rss_mib() - rss_before, 1),
        "heap_peak_mib": round(heap_peak, 2) if heap_peak is not None else None,
    }


def _batched(trace: bool) -> dict[str, Any]:
    from django.conf import settings

    from accounts.identity import Actor
    from keys.jobs.cleanup import cleanup_due_keys

    def clean() -> dict[str, Any]:
        summary = cleanup_due_keys(actor=Actor.system("cleanup"))
        return {"cleaned": summary.cleaned, "batches": summary.batches, "batch_size": settings.BYOK_CLEANUP_BATCH_SIZE}

    return _measure(clean, trace=trace)


def _per_key() -> dict[str, Any]:
    from accounts.identity import Actor
    from keys.selectors import due_for_cleanup
    from keys.services import key_cleanup

    actor = Actor.system("cleanup")

    def clean() -> dict[str, Any]:
        ids = list(due_for_cleanup().order_by("deletion_date").values_list("id", flat=True))
        for key_id in ids:
            key_cleanup(actor=actor, key_id=key_id)
        return {"cleaned": len(ids)}

    return _measure(clean)


def main(argv: list[str]) -> int:
    if not argv:
        rows = run()
        for row in rows:
            print(json.dumps(row))
        return 0
    _setup()
    phase, *args = argv
    if phase == "load":
        result = _load(int(args[0]), int(args[1]))
    elif phase == "batched":
        result = _batched("--trace" in args)
    elif phase == "per-key":
        result = _per_key()
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
