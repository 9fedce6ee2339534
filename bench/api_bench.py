"""Key list at 100,000 keys on PostgreSQL (issue 6): ``GET /api/v1/keys/?keystore=…&state=ACTIVE`` first page.

``run()`` recreates the database ``byok_bench_api`` next to ``DATABASE_URL``'s,
migrates it, bulk-inserts ``BENCH_API_KEYS`` keys (default 100,000) across 100
keystores with a renewal chain among them, and then, in a fresh worker process
(``python -m bench.api_bench measure``), times side by side through the full Django
stack (middleware, session authentication, throttling, DRF):

- the key list: the first page (50 keys) of one keystore's ACTIVE keys, as an auditor
  who is a member of every keystore;
- the baseline: a bare DRF ``APIView`` behind the same stack returning 50 static objects.

Rounds alternate between the two so that drift (caches, autovacuum) hits both alike.
``BENCH_API_KEYS=5000 python -m bench api_bench`` is a quick run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench._support import recreate_database, run_phase

DATABASE = "byok_bench_api"
KEYSTORES = 100
PAGE = 50
ROUNDS = 10
REQUESTS_PER_ROUND = 50
TARGET_RATIO = 3.0
BASELINE_PATH = "/_bench/static/"


def _keys() -> int:
    return int(os.environ.get("BENCH_API_KEYS", "100000"))


def _worker(phase: str) -> dict[str, Any]:
    return run_phase("api_bench", DATABASE, phase, env={"BYOK_THROTTLE_USER": "100000000/min"})


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    load = _worker("load")
    figures = _worker("measure")
    keys = load["keys"]
    ratio = figures["list_median_ms"] / figures["baseline_median_ms"]
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    return [
        {
            "figure": f"GET /api/v1/keys/?keystore=…&state=ACTIVE first page, median "
            f"({keys:,} keys, {KEYSTORES} keystores)",
            "value": figures["list_median_ms"],
            "unit": "ms",
            "baseline": figures["baseline_median_ms"],
            "ratio": round(ratio, 2),
            "note": f"baseline: bare DRF view, 50 static objects, same stack; target ≤ {TARGET_RATIO}× ({verdict}); "
            f"{figures['list_queries']} queries/request",
        },
        {
            "figure": "GET /api/v1/keys/?keystore=…&state=ACTIVE first page, throughput (one client, loopback)",
            "value": figures["list_rps"],
            "unit": "req/s",
            "baseline": figures["baseline_rps"],
            "ratio": round(figures["list_rps"] / figures["baseline_rps"], 2),
            "note": f"{ROUNDS} alternating rounds of {REQUESTS_PER_ROUND} requests each; data load "
            f"{load['seconds']:.1f} s (setup only)",
        },
    ]


# --- worker side (Django set up with this module as the settings) ---------------


def _load() -> dict[str, Any]:
    from django.core.management import call_command

    from accounts.models import User
    from keys.models import Key
    from keystores.models import Keystore, Membership, Role

    started = time.monotonic()
    call_command("migrate", verbosity=0)
    auditor = User.objects.create_user(username="bench-auditor", password="bench-auditor-password")
    stores = Keystore.objects.bulk_create(
        Keystore(
            name=f"keystore-{i:03}",
            aws_account_id=f"{100000000000 + i}",
            region="eu-west-1",
            role_arn=f"arn:aws:iam::{100000000000 + i}:role/byok",
            external_id=f"byok-bench-{i}",
        )
        for i in range(KEYSTORES)
    )
    Membership.objects.bulk_create(Membership(keystore=s, user=auditor, role=Role.AUDITOR) for s in stores)
    total = _keys()
    states = ["ACTIVE"] * 6 + ["INACTIVE", "REPLACED", "PENDING_DELETION", "DELETED"]
    now = datetime.now(UTC)
    batch: list[Key] = []
    for i in range(total):
        store = stores[i % KEYSTORES]
        key_id = uuid.uuid4()
        batch.append(
            Key(
                id=key_id,
                keystore=store,
                name=f"key-{i}",
                alias=f"alias/key-{i}" if i % 3 == 0 else "",
                tags={"app": f"app-{i % 17}", "env": "prod"},
                state=states[i % len(states)],
                kms_key_arn=f"arn:aws:kms:eu-west-1:{store.aws_account_id}:key/{key_id}",
                kms_state="ENABLED",
                kcv="A1B2C3",
            )
        )
        if len(batch) == 5000:
            Key.objects.bulk_create(batch)
            batch = []
    Key.objects.bulk_create(batch)
    # created_at is auto_now_add: spread it so that ordering by it means something.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE keys_key SET created_at = %s - (random() * interval '365 days')", [now - timedelta(days=1)]
        )
        # A renewal chain: the n-th REPLACED key of a keystore is replaced by its n-th ACTIVE key.
        cursor.execute(
            """
            WITH r AS (SELECT id, keystore_id, row_number() OVER (PARTITION BY keystore_id ORDER BY id) AS n
                       FROM keys_key WHERE state = 'REPLACED'),
                 a AS (SELECT id, keystore_id, row_number() OVER (PARTITION BY keystore_id ORDER BY id) AS n
                       FROM keys_key WHERE state = 'ACTIVE')
            UPDATE keys_key k SET replaces_id = r.id
            FROM a JOIN r ON a.keystore_id = r.keystore_id AND a.n = r.n
            WHERE k.id = a.id
            """
        )
        cursor.execute("ANALYZE")
    return {"keys": total, "seconds": time.monotonic() - started}


def _measure() -> dict[str, Any]:
    from django.db import connection
    from django.test import Client

    from accounts.models import User
    from keystores.models import Keystore

    client = Client()
    client.force_login(User.objects.get(username="bench-auditor"))
    keystore = Keystore.objects.order_by("name")[KEYSTORES // 2]
    list_url = f"/api/v1/keys/?keystore={keystore.pk}&state=ACTIVE"

    def one(url: str) -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.content[:500]!r}")
        return elapsed

    # Both endpoints authenticate: a client without the session is refused by both.
    for url in (list_url, BASELINE_PATH):
        refused = Client().get(url).status_code
        assert refused in (401, 403), f"{url} answered {refused} without a session"
    first = client.get(list_url).json()
    # With the full data set a keystore has ~600 ACTIVE keys: the first page must be full and linked.
    if _keys() >= 100 * PAGE * KEYSTORES // 60:
        assert len(first["results"]) == PAGE, "the first page should be full"
        assert first["next"], "the first page should link to the next"
    queries: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        one(list_url)
    for _ in range(20):  # warm up both paths
        one(list_url)
        one(BASELINE_PATH)
    timings: dict[str, list[float]] = {list_url: [], BASELINE_PATH: []}
    walls: dict[str, float] = {list_url: 0.0, BASELINE_PATH: 0.0}
    for _ in range(ROUNDS):
        for url in (list_url, BASELINE_PATH):
            started = time.perf_counter()
            timings[url] += [one(url) for _ in range(REQUESTS_PER_ROUND)]
            walls[url] += time.perf_counter() - started
    count = ROUNDS * REQUESTS_PER_ROUND
    return {
        "list_median_ms": round(statistics.median(timings[list_url]) * 1000, 2),
        "baseline_median_ms": round(statistics.median(timings[BASELINE_PATH]) * 1000, 2),
        "list_rps": round(count / walls[list_url], 1),
        "baseline_rps": round(count / walls[BASELINE_PATH], 1),
        "list_queries": len(queries),
    }


def _static_objects_view() -> Any:
    from rest_framework.renderers import JSONRenderer
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from byok_portal.api import API_THROTTLES

    objects = [
        {"id": str(uuid.UUID(int=i)), "name": f"object-{i}", "state": "ACTIVE", "tags": {"app": "x"}}
        for i in range(PAGE)
    ]

    class StaticObjects(APIView):
        """The baseline: what DRF costs behind the same stack, with no database work of its own.

        Same middleware, same authentication and permission classes (the defaults, as
        the key list's), the same throttles and renderer as ``keys.api.KeyViewSet``.
        """

        throttle_classes = API_THROTTLES
        throttle_scope = ""
        renderer_classes = [JSONRenderer]

        def get(self, request: Any) -> Response:
            return Response({"results": objects, "next": None})

    return StaticObjects.as_view()


def __getattr__(name: str) -> Any:
    """The worker's URLconf (``ROOT_URLCONF = "bench.api_bench"``): the portal plus the baseline endpoint.

    Built on first use, because this module is imported before Django is set up.
    """
    if name == "urlpatterns":
        from django.urls import include, path

        return [path(BASELINE_PATH.strip("/") + "/", _static_objects_view()), path("", include("byok_portal.urls"))]
    raise AttributeError(name)


if __name__ == "__main__":
    import django
    from django.conf import settings

    django.setup()
    settings.ROOT_URLCONF = "bench.api_bench"
    phase = sys.argv[1]
    print(json.dumps(_load() if phase == "load" else _measure()))
