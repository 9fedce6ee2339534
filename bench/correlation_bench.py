"""CloudTrail correlation (SPEC §14): what naming every session costs in AssumeRole calls.

Credentials are cached per (keystore, operation, acting identity) instead of per
keystore, so that no session carries one person's SourceIdentity into another's
work. The price is one AssumeRole for each new (operation, identity) pair per
session lifetime (BYOK_AWS_SESSION_SECONDS minus a 5-minute margin). This runs a
working day's mix in one session lifetime: ``PEOPLE`` custodians each deactivating
and activating ``KEYS`` keys ``ROUNDS`` times, counted by the sandbox's STS. The
baseline is the one AssumeRole per keystore that an unnamed, shared session needed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from typing import Any

from bench._support import recreate_database, run_phase, sandbox_keystore

DATABASE = "byok_bench_correlation"
PEOPLE = int(os.environ.get("BENCH_CORRELATION_PEOPLE", "3"))
KEYS = int(os.environ.get("BENCH_CORRELATION_KEYS", "5"))
ROUNDS = int(os.environ.get("BENCH_CORRELATION_ROUNDS", "4"))


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    figures = run_phase("correlation_bench", DATABASE, "worker")
    operations = figures["operations"]
    return [
        {
            "figure": f"AssumeRole calls: {operations} operations by {PEOPLE} people, 2 kinds, 1 keystore",
            "value": figures["assume_role"],
            "unit": "calls",
            "baseline": 1,
            "ratio": figures["assume_role"],
            "note": "baseline = one shared unnamed session per keystore (before SPEC §14's correlation)",
        },
        {
            "figure": "AssumeRole calls per operation (amortised over one session lifetime)",
            "value": round(figures["assume_role"] / operations, 3),
            "unit": "calls/op",
            "baseline": round(1 / operations, 3),
            "ratio": figures["assume_role"],
            "note": "one per new (operation, identity) pair; none afterwards until the session nears expiry",
        },
        {
            "figure": "time of one AssumeRole (sandbox, median)",
            "value": round(figures["assume_role_ms"], 2),
            "unit": "ms",
            "baseline": round(figures["operation_ms"], 2),
            "ratio": round(figures["assume_role_ms"] / figures["operation_ms"], 2),
            "note": "baseline = median deactivate/activate with a cached session; AWS's STS adds its own latency",
        },
    ]


def _worker() -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from accounts.identity import Actor
    from accounts.models import User
    from byok_portal import aws
    from keys import services
    from keystores.models import Role
    from keystores.services import membership_set

    call_command("migrate", verbosity=0)

    def assume_role_calls() -> int:
        with urllib.request.urlopen(f"{settings.BYOK_SANDBOX_URL}/_sandbox/calls") as response:
            return int(json.loads(response.read()).get("STS.AssumeRole", 0))

    owner = User.objects.create_user("owner", password="bench-password-123")
    owner.user_permissions.add(Permission.objects.get(codename="add_keystore"))
    owner_actor = Actor.for_user(User.objects.get(pk=owner.pk))
    server, keystore = sandbox_keystore(owner_actor)
    people = []
    for i in range(PEOPLE):
        user = User.objects.create_user(f"custodian{i}", password="bench-password-123")
        membership_set(actor=owner_actor, keystore_id=keystore.pk, user=user, role=Role.CUSTODIAN)
        people.append(Actor.for_user(user))
    keys = [services.key_create(actor=owner_actor, keystore_id=keystore.pk, name=f"k{i}").key for i in range(KEYS)]

    before, operations, operation_seconds = assume_role_calls(), 0, []
    for _ in range(ROUNDS):
        for person in people:
            for key in keys:
                for call in (services.key_deactivate, services.key_activate):
                    started = time.perf_counter()
                    call(actor=person, key_id=key.pk)
                    operation_seconds.append(time.perf_counter() - started)
                    operations += 1
    assume_role = assume_role_calls() - before

    assume_seconds = []
    for i in range(20):
        aws.credential_cache.clear()
        started = time.perf_counter()
        aws.credential_cache.get(keystore, aws.SessionTag.of("bench", people[i % PEOPLE]))
        assume_seconds.append(time.perf_counter() - started)
    server.stop()
    return {
        "operations": operations,
        "assume_role": assume_role,
        "assume_role_ms": statistics.median(assume_seconds) * 1000,
        "operation_ms": statistics.median(operation_seconds) * 1000,
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        print(json.dumps(_worker()))
    else:
        for row in run():
            print(row)
