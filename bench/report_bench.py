"""Reports at scale, on PostgreSQL (issue 21): a 10,000-key inventory in bounded memory.

``run()`` creates ``byok_bench_reports`` next to ``DATABASE_URL``'s database with
``BENCH_REPORT_KEYS`` keys (default 10,000) and one audit event per key, then streams
``GET /api/v1/reports/inventory/?format=csv`` and ``?format=pdf`` through the full
Django stack in fresh processes (``python -m bench.report_bench PHASE``), measuring
the Python heap's peak with ``tracemalloc`` while the report is produced. The same
report limited to a tenth of the keys (one keystore of ten) is the baseline: bounded
memory means the peak does not grow with the number of rows.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc
import uuid
from typing import Any

from bench._support import recreate_database, run_phase

DATABASE = "byok_bench_reports"
KEYSTORES = 10
ROOT = "bench-root"


def _keys() -> int:
    return int(os.environ.get("BENCH_REPORT_KEYS", "10000"))


def run() -> list[dict[str, Any]]:
    count = _keys()
    recreate_database(DATABASE)
    load = run_phase("report_bench", DATABASE, "load", str(count))
    results = {
        (fmt, scope): run_phase("report_bench", DATABASE, "report", fmt, scope)
        for fmt in ("csv", "pdf")
        for scope in ("all", "one-keystore")
    }
    n = f"{count:,}"
    rows: list[dict[str, Any]] = [
        {
            "figure": f"reports: load {n} keys with one audit event each",
            "value": load["seconds"],
            "unit": "s",
            "note": "setup only",
        }
    ]
    for fmt in ("csv", "pdf"):
        full, tenth = results[(fmt, "all")], results[(fmt, "one-keystore")]
        rows += [
            {
                "figure": f"reports: inventory {fmt.upper()} of {n} keys, Python heap peak",
                "value": full["peak_mib"],
                "unit": "MiB",
                "baseline": tenth["peak_mib"],
                "ratio": full["peak_mib"] / tenth["peak_mib"] if tenth["peak_mib"] else None,
                "note": f"baseline: {tenth['rows']:,} keys (one keystore); tracemalloc over the whole request",
            },
            {
                "figure": f"reports: inventory {fmt.upper()} of {n} keys",
                "value": full["rows"] / full["seconds"],
                "unit": "keys/s",
                "note": f"{full['seconds']:.1f} s, {full['bytes'] / 1024 / 1024:.1f} MiB, via the API, untraced",
            },
        ]
    return rows


def _load(count: int) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connection

    from accounts.identity import Actor
    from audit.services import Entry, record_many
    from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
    from keys.models import Key
    from keystores.models import Keystore

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    from accounts.models import User

    User.objects.create_superuser(username=ROOT, password="x" * 16)
    actor = Actor.system("bench")
    stores = [
        Keystore.objects.create(
            name=f"Keystore {n}",
            aws_account_id=f"{n + 100000000000}",
            region="eu-west-1",
            role_arn=f"arn:aws:iam::{n + 100000000000}:role/byok",
        )
        for n in range(KEYSTORES)
    ]
    batch: list[Key] = []
    for n in range(count):
        store = stores[n % KEYSTORES]
        batch.append(
            Key(
                id=uuid.uuid4(),
                keystore=store,
                name=f"Key {n:06}",
                alias=f"alias/bench-{n:06}",
                kcv=f"{n % 0xFFFFFF:06X}",
                state=KeyState.ACTIVE,
                kms_state=KmsState.ENABLED,
                kms_key_arn=f"arn:aws:kms:eu-west-1:{store.aws_account_id}:key/{uuid.uuid4()}",
            )
        )
        if len(batch) == 2000 or n == count - 1:
            Key.objects.bulk_create(batch)
            record_many(
                [Entry(actor=actor, operation=Operation.CREATE, outcome=Outcome.SUCCESS, key=key) for key in batch]
            )
            batch = []
    # As autovacuum would after a load this size: the planner needs the statistics to pick the key index.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"seconds": time.monotonic() - started}


def _report(fmt: str, scope: str) -> dict[str, Any]:
    from django.test import Client

    from accounts.models import User
    from keystores.models import Keystore

    client: Any = Client()  # a streaming response: django-stubs types it as a plain one
    client.force_login(User.objects.get(username=ROOT), backend="django.contrib.auth.backends.ModelBackend")
    url = f"/api/v1/reports/inventory/?format={fmt}"
    if scope == "one-keystore":
        url += f"&keystore={Keystore.objects.order_by('name').values_list('pk', flat=True).first()}"
    assert client.get("/api/v1/reports/inventory/?format=csv&keystore=" + str(uuid.uuid4())).status_code == 400
    # Timed without tracemalloc (which slows every allocation several times), then measured with it.
    started = time.perf_counter()
    size, lines = _drain(client.get(url))
    seconds = time.perf_counter() - started
    tracemalloc.start()
    _drain(client.get(url))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows = lines - 1 if fmt == "csv" else _rows(scope)
    return {"rows": rows, "bytes": size, "seconds": seconds, "peak_mib": peak / 1024 / 1024}


def _drain(response: Any) -> tuple[int, int]:
    assert response.status_code == 200, response.status_code
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines


def _rows(scope: str) -> int:
    from keys.models import Key
    from keystores.models import Keystore

    keys = Key.objects.all()
    if scope == "one-keystore":
        keys = keys.filter(keystore=Keystore.objects.order_by("name").first())
    return keys.count()


def _main(argv: list[str]) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    phase = argv[0]
    if phase == "load":
        result = _load(int(argv[1]))
    elif phase == "report":
        result = _report(argv[1], argv[2])
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
