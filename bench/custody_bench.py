"""Custody backends (issue 19, SPEC §13): create, activate and download time per backend, and HSM sessions used.

Each backend runs in a worker process of its own against its own PostgreSQL database
(``byok_bench_custody``, recreated) and an in-process sandbox AWS. ``pkcs11`` uses a
SoftHSM2 token initialised for the run in a temporary directory (as the tests do):
SoftHSM2 is a library in the portal's process, so its figures show the PKCS#11 round
trips, not a network HSM's latency. Per spec and operation: the median time, the time
outside KMS calls, and (pkcs11) how many HSM sessions the operation borrowed from the pool.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._support import keystore_with_two_people, recreate_database, run_phase, time_kms_calls

DATABASE = "byok_bench_custody"
ROUNDS = int(os.environ.get("BENCH_CUSTODY_ROUNDS", "10"))
SPECS = ("SYMMETRIC_DEFAULT", "HMAC_256")
OPERATIONS = ("create", "activate", "download")


def run() -> list[dict[str, Any]]:
    from tests.custody.softhsm import init_token, pkcs11_environment

    figures: dict[str, dict[str, Any]] = {}
    recreate_database(DATABASE)
    figures["software"] = run_phase("custody_bench", DATABASE, "worker", env={"BYOK_CUSTODY": "software"})
    with tempfile.TemporaryDirectory(prefix="byok-bench-softhsm-") as directory:
        token = init_token(Path(directory), "byok-bench")
        recreate_database(DATABASE)
        figures["pkcs11"] = run_phase("custody_bench", DATABASE, "worker", env=pkcs11_environment(token))
    rows: list[dict[str, Any]] = []
    for spec in SPECS:
        for operation in OPERATIONS:
            base = figures["software"][spec][operation]
            for backend in ("software", "pkcs11"):
                figure = figures[backend][spec][operation]
                sessions = f"; {figure['sessions']} HSM session(s) per operation" if backend == "pkcs11" else ""
                rows.append(
                    {
                        "figure": f"{backend} custody, {spec}: {operation} (median)",
                        "value": round(figure["ms"], 2),
                        "unit": "ms",
                        "baseline": round(base["ms"], 2),
                        "ratio": round(figure["ms"] / base["ms"], 2) if base["ms"] else None,
                        "note": f"baseline = software custody; {figure['portal_ms']:.1f} ms outside KMS calls"
                        f"{sessions}; {ROUNDS} rounds",
                    }
                )
    return rows


def _worker() -> dict[str, Any]:
    import django

    django.setup()

    from keys import custody, hsm, services
    from tests.keys.helpers import public_pem

    on_hsm = custody.backend() == custody.PKCS11
    if on_hsm:
        hsm.init_kek()

    server, keystore, alice, bob = keystore_with_two_people()
    kms_seconds = time_kms_calls()
    pem = public_pem(3072)

    def sessions_used() -> int:
        return hsm.pool().uses if on_hsm else 0

    results: dict[str, dict[str, Any]] = {}
    for spec in SPECS:
        samples: dict[str, list[tuple[float, float, int]]] = {op: [] for op in OPERATIONS}

        def measure(operation: str, call: Any, samples: dict[str, list[tuple[float, float, int]]] = samples) -> Any:
            kms_seconds[0] = 0.0
            uses = sessions_used()
            started = time.perf_counter()
            result = call()
            elapsed = (time.perf_counter() - started) * 1000
            samples[operation].append((elapsed, elapsed - kms_seconds[0] * 1000, sessions_used() - uses))
            return result

        for i in range(ROUNDS):
            key = measure(
                "create",
                lambda i=i, spec=spec: services.key_create(
                    actor=alice, keystore_id=keystore.pk, name=f"{spec}-{i}", key_spec=spec
                ),
            ).key
            services.key_deactivate(actor=alice, key_id=key.pk)
            measure("activate", lambda key=key: services.key_activate(actor=alice, key_id=key.pk))
            services.key_prepare_download(actor=alice, key_id=key.pk, public_key_pem=pem)
            measure("download", lambda key=key: services.key_download(actor=bob, key_id=key.pk))
        results[spec] = {
            op: {
                "ms": statistics.median(s[0] for s in values),
                "portal_ms": statistics.median(s[1] for s in values),
                "sessions": max(s[2] for s in values),
            }
            for op, values in samples.items()
        }
    server.stop()
    return results


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        print(json.dumps(_worker()))
    else:
        for row in run():
            print(row)
