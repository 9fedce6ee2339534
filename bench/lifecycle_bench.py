"""Lifecycle operations (issues 3 and 15): KMS calls per operation, and portal time outside KMS.

Runs in a worker process (``python -m bench.lifecycle_bench worker``) against its
own PostgreSQL database next to ``DATABASE_URL``'s (``byok_bench_lifecycle``) and
an in-process sandbox AWS. Calls are counted by the sandbox itself
(``/_sandbox/calls``); time inside KMS calls is measured around the AWS layer's
single call path, so "portal time" is everything else the operation does (locks,
crypto, audit chain, queries). The baseline for the call counts is the bound the
issue sets; for portal time it is the time the same operation spent inside KMS.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from typing import Any

from bench._support import recreate_database, run_phase, sandbox_keystore, time_kms_calls

# Overridable so that two checkouts benchmarking on one PostgreSQL server do not drop each other's database.
DATABASE = os.environ.get("BENCH_LIFECYCLE_DATABASE", "byok_bench_lifecycle")
ROUNDS = int(os.environ.get("BENCH_LIFECYCLE_ROUNDS", "20"))
# The bounds: KMS calls per operation after the first AssumeRole.
BOUNDS = {"create": 4, "deactivate": 2, "activate": 3, "upload": 3, "cancel_deletion": 3}
# Issue 15's re-import before ValidTo: GetParametersForImport + ImportKeyMaterial per material version, nothing
# else (the rotated key has two).
BOUNDS["reimport (2 versions)"] = 4
BOUND_NOTES = {"reimport (2 versions)": "baseline = GetParametersForImport + ImportKeyMaterial per version"}


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    # What production uses: a fresh RSA-4096 wrapping key from KMS for every import.
    figures = run_phase("lifecycle_bench", DATABASE, "worker", env={"BYOK_IMPORT_WRAPPING_KEY_SPEC": "RSA_4096"})
    rows: list[dict[str, Any]] = []
    for operation, figure in figures.items():
        bound = BOUNDS.get(operation)
        rows.append(
            {
                "figure": f"{operation}: KMS calls",
                "value": figure["calls"],
                "unit": "calls",
                "baseline": bound,
                "ratio": round(figure["calls"] / bound, 2) if bound else None,
                "note": BOUND_NOTES.get(operation, "baseline = the issue's upper bound") if bound else "no bound set",
            }
        )
        rows.append(
            {
                "figure": f"{operation}: portal time outside KMS (median)",
                "value": round(figure["portal_ms"], 2),
                "unit": "ms",
                "baseline": round(figure["kms_ms"], 2),
                "ratio": round(figure["portal_ms"] / figure["kms_ms"], 2) if figure["kms_ms"] else None,
                "note": f"baseline = median time inside KMS calls (sandbox), {ROUNDS} rounds",
            }
        )
    return rows


def _worker() -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from accounts.identity import Actor
    from accounts.models import User
    from keys import services
    from keys.models import Key

    def reimport(*, actor: Actor, key_id: Any) -> Any:
        # A policy given to the rotated key: its two materials are imported again with a ValidTo.
        Key.objects.filter(pk=key_id).update(material_valid_days=30)
        return services.key_reimport(actor=actor, key_id=key_id)

    call_command("migrate", verbosity=0)
    kms_seconds = time_kms_calls()

    def sandbox_calls() -> dict[str, int]:
        with urllib.request.urlopen(f"{settings.BYOK_SANDBOX_URL}/_sandbox/calls") as response:
            return dict(json.loads(response.read()))

    user = User.objects.create_user("bench", password="bench-password-123")
    user.user_permissions.add(Permission.objects.get(codename="add_keystore"))
    user = User.objects.get(pk=user.pk)
    actor = Actor.for_user(user)
    server, keystore = sandbox_keystore(actor)

    def measure(operation: str, call: Any) -> tuple[int, float, float]:
        kms_seconds[0] = 0.0
        before = sandbox_calls()
        started = time.perf_counter()
        call()
        total = time.perf_counter() - started
        after = sandbox_calls()
        # KMS only, as the bounds say: each operation's first run also assumes its own named role session
        # (CloudTrail correlation), an STS call that bench/correlation_bench.py counts.
        calls = sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("KMS."))
        return calls, (total - kms_seconds[0]) * 1000, kms_seconds[0] * 1000

    samples: dict[str, list[tuple[int, float, float]]] = {}

    def create(i: int) -> Any:
        return services.key_create(actor=actor, keystore_id=keystore.pk, name=f"k{i}", alias=f"alias/bench-{i}").key

    for i in range(ROUNDS):
        created: list[Any] = []
        samples.setdefault("create", []).append(measure("create", lambda i=i, out=created: out.append(create(i))))
        key_id = created[0].pk
        for operation, call in (
            ("deactivate", services.key_deactivate),
            ("activate", services.key_activate),
            ("upload", services.key_upload),
            ("schedule_deletion", services.key_schedule_deletion),
            ("cancel_deletion", services.key_cancel_deletion),
            ("activate_again", services.key_activate),
            # Issue 15: native rotation (stage, import NEW, RotateKeyOnDemand, confirm), then renew the rotated key.
            ("rotate", services.key_rotate),
            ("reimport (2 versions)", reimport),
            ("renew", services.key_renew),
        ):
            sample = measure(operation, lambda c=call, k=key_id: c(actor=actor, key_id=k))
            if operation != "activate_again":  # only puts the key back in ACTIVE for renew
                samples.setdefault(operation, []).append(sample)
    server.stop()
    return {
        operation: {
            "calls": max(s[0] for s in rows),
            "portal_ms": statistics.median(s[1] for s in rows),
            "kms_ms": statistics.median(s[2] for s in rows),
        }
        for operation, rows in samples.items()
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        print(json.dumps(_worker()))
    else:
        for row in run():
            print(row)
