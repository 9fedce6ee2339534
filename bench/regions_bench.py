"""Multi-Region keys (issue 16): KMS calls per operation as a function of the number of regions.

Runs in a worker process (``python -m bench.regions_bench worker``) against its own
PostgreSQL database (``byok_bench_regions``) and an in-process sandbox AWS. Calls are
counted by the sandbox itself (``/_sandbox/calls``, every region), for a key with 1
(a single-Region key), 2, 3 and 4 regions (the primary and 0–3 replicas). The baseline
is the single-Region key's count; the ratio says how an operation's cost grows with
regions. Each ReplicateKey also costs two CreateKey of quota in its replica's region
(NOTES.md), which the sandbox does not count. Create and renew include the DescribeKey
calls that wait for each new replica to leave ``Creating`` (the sandbox's Creating lasts
0.2 s; AWS's "a few seconds" means more of them there, with the backoff capped at 2 s).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any

from bench._support import recreate_database, run_phase, sandbox_keystore

DATABASE = "byok_bench_regions"
REPLICA_REGIONS = ["us-east-1", "ap-southeast-2", "ca-central-1"]
REGION_COUNTS = [int(n) for n in os.environ.get("BENCH_REGIONS", "1,2,3,4").split(",")]
OPERATIONS = (
    "create",
    "deactivate",
    "activate",
    "upload",
    "update",
    "schedule_deletion",
    "cancel_deletion",
    "rotate",
    "renew",
)


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    figures = run_phase("regions_bench", DATABASE, "worker", env={"BYOK_IMPORT_WRAPPING_KEY_SPEC": "RSA_2048"})
    rows: list[dict[str, Any]] = []
    for operation in OPERATIONS:
        single = figures[operation]["1"]
        for regions in REGION_COUNTS:
            calls = figures[operation][str(regions)]
            rows.append(
                {
                    "figure": f"{operation}, {regions} region{'s' if regions > 1 else ''}: KMS calls",
                    "value": calls,
                    "unit": "calls",
                    "baseline": single,
                    "ratio": round(calls / single, 2) if single else None,
                    "note": "baseline = the same operation on a single-Region key",
                }
            )
    return rows


def _worker() -> dict[str, dict[str, int]]:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from accounts.identity import Actor
    from accounts.models import User
    from keys import services

    call_command("migrate", verbosity=0)

    def sandbox_calls() -> dict[str, int]:
        with urllib.request.urlopen(f"{settings.BYOK_SANDBOX_URL}/_sandbox/calls") as response:
            return dict(json.loads(response.read()))

    user = User.objects.create_user("bench", password="bench-password-123")
    user.user_permissions.add(Permission.objects.get(codename="add_keystore"))
    actor = Actor.for_user(User.objects.get(pk=user.pk))
    server, keystore = sandbox_keystore(actor)

    def count(call: Any) -> int:
        before = sandbox_calls()
        call()
        after = sandbox_calls()
        return sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("KMS."))

    figures: dict[str, dict[str, int]] = {operation: {} for operation in OPERATIONS}
    for regions in REGION_COUNTS:
        replicas = REPLICA_REGIONS[: regions - 1]
        created: list[Any] = []

        def create(replicas: list[str] = replicas, regions: int = regions, out: list[Any] = created) -> None:
            done = services.key_create(
                actor=actor,
                keystore_id=keystore.pk,
                name=f"bench {regions}",
                alias=f"alias/bench-{regions}",
                multi_region=bool(replicas),
                replica_regions=replicas,
            )
            out.append(done.key)

        figures["create"][str(regions)] = count(create)
        key_id = created[0].pk
        for operation, call, extra in (
            ("deactivate", services.key_deactivate, {}),
            ("activate", services.key_activate, {}),
            ("upload", services.key_upload, {}),
            ("update", services.key_update, {"tags": {"bench": str(regions)}}),
            ("schedule_deletion", services.key_schedule_deletion, {}),
            ("cancel_deletion", services.key_cancel_deletion, {}),
            ("activate_again", services.key_activate, {}),
            ("rotate", services.key_rotate, {}),
            ("renew", services.key_renew, {}),
        ):
            calls = count(lambda c=call, k=key_id, e=extra: c(actor=actor, key_id=k, **e))
            if operation != "activate_again":  # only puts the key back in ACTIVE for renew
                figures[operation][str(regions)] = calls
    server.stop()
    return figures


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        print(json.dumps(_worker()))
    else:
        for row in run():
            print(row)
