"""Key specs (issue 14): create and download time per spec, and what RSA-4096 generation holds up.

Runs in a worker process against its own PostgreSQL database (``byok_bench_key_specs``)
and an in-process sandbox AWS, like the lifecycle benchmark. Per spec: the time to
generate the material alone, to create a key (generate, CreateKey, import, seal,
audit) and to download it (unseal, wrap, audit). For RSA-4096, the slowest spec:

- how long a renew holds the key's row lock, against the renew's whole time (the
  material is generated before the lock is taken; a probe on another connection tries
  ``SELECT ... FOR UPDATE NOWAIT`` every millisecond and records when it is refused);
- how long another thread of the same process (another request in a threaded worker)
  is held up while keys are generated: the longest gap of a 1 ms ticker (OpenSSL
  releases the GIL while it generates).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from typing import Any

from bench._support import keystore_with_two_people, recreate_database, run_phase, time_kms_calls

DATABASE = "byok_bench_key_specs"
ROUNDS = int(os.environ.get("BENCH_SPEC_ROUNDS", "5"))
SPECS = [
    ("SYMMETRIC_DEFAULT", None),
    ("HMAC_256", None),
    ("HMAC_512", None),
    ("RSA_2048", "SIGN_VERIFY"),
    ("RSA_3072", "SIGN_VERIFY"),
    ("RSA_4096", "ENCRYPT_DECRYPT"),
    ("ECC_NIST_P256", None),
    ("ECC_NIST_P521", None),
]


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    figures = run_phase("key_spec_bench", DATABASE, "worker", env={"BYOK_IMPORT_WRAPPING_KEY_SPEC": "RSA_4096"})
    rows: list[dict[str, Any]] = []
    symmetric = figures["specs"]["SYMMETRIC_DEFAULT"]
    for spec, figure in figures["specs"].items():
        for what, label in (
            ("generate_ms", "generate material"),
            ("create_ms", "create"),
            ("create_portal_ms", "create, time outside KMS"),
            ("download_ms", "download"),
        ):
            base = symmetric[what]
            rows.append(
                {
                    "figure": f"{spec}: {label} (median)",
                    "value": round(figure[what], 2),
                    "unit": "ms",
                    "baseline": round(base, 2),
                    "ratio": round(figure[what] / base, 2) if base else None,
                    "note": f"baseline = SYMMETRIC_DEFAULT; max {figure[what.replace('_ms', '_max_ms')]:.0f} ms; "
                    f"{figure['rounds']} rounds",
                }
            )
    lock = figures["rsa_4096_renew"]
    rows.append(
        {
            "figure": "RSA_4096 renew: key row lock held (median)",
            "value": round(lock["locked_ms"], 2),
            "unit": "ms",
            "baseline": round(lock["total_ms"], 2),
            "ratio": round(lock["locked_ms"] / lock["total_ms"], 2),
            "note": f"baseline = the renew's whole time (generation runs before the lock); "
            f"{lock['kms_ms']:.0f} ms of the locked time is inside KMS calls (the sandbox makes an RSA-4096 "
            "wrapping key per GetParametersForImport)",
        }
    )
    stall = figures["rsa_4096_stall"]
    rows.append(
        {
            "figure": "RSA_4096 create: longest stall of another thread",
            "value": round(stall["max_gap_ms"], 2),
            "unit": "ms",
            "baseline": round(stall["generate_ms"], 2),
            "ratio": round(stall["max_gap_ms"] / stall["generate_ms"], 3),
            "note": "baseline = time generating the key meanwhile (a 1 ms ticker thread)",
        }
    )
    return rows


def _worker() -> dict[str, Any]:
    import django

    django.setup()
    from django.db import DatabaseError, connection, transaction

    from keys import custody, services
    from keys.models import Key
    from tests.keys.helpers import public_pem

    server, keystore, alice, bob = keystore_with_two_people()
    kms_seconds = time_kms_calls()
    pem = public_pem(3072)

    def ms(since: float) -> float:
        return (time.perf_counter() - since) * 1000

    specs: dict[str, dict[str, Any]] = {}
    for key_spec, usage in SPECS:
        generate, create, create_portal, download = [], [], [], []
        for i in range(ROUNDS):
            started = time.perf_counter()
            custody.wipe(custody.generate_material(key_spec))
            generate.append(ms(started))
            kms_seconds[0] = 0.0
            started = time.perf_counter()
            key = services.key_create(
                actor=alice, keystore_id=keystore.pk, name=f"{key_spec}-{i}", key_spec=key_spec, key_usage=usage
            ).key
            create.append(ms(started))
            create_portal.append(create[-1] - kms_seconds[0] * 1000)
            services.key_prepare_download(actor=alice, key_id=key.pk, public_key_pem=pem)
            started = time.perf_counter()
            services.key_download(actor=bob, key_id=key.pk)
            download.append(ms(started))
        specs[key_spec] = {
            "rounds": ROUNDS,
            **{f"{name}_ms": statistics.median(values) for name, values in
               (("generate", generate), ("create", create), ("create_portal", create_portal), ("download", download))},
            **{f"{name}_max_ms": max(values) for name, values in
               (("generate", generate), ("create", create), ("create_portal", create_portal), ("download", download))},
        }  # fmt: skip

    # How long an RSA-4096 renew holds the key's row lock.
    locked, totals, renew_kms = [], [], []
    for i in range(ROUNDS):
        key = services.key_create(actor=alice, keystore_id=keystore.pk, name=f"renew-{i}", key_spec="RSA_4096").key
        refused: list[float] = []
        done = threading.Event()

        def probe(key_id: Any = key.pk, refused: list[float] = refused, done: threading.Event = done) -> None:
            try:
                while not done.is_set():
                    try:
                        with transaction.atomic():
                            Key.objects.select_for_update(nowait=True).filter(pk=key_id).exists()
                    except DatabaseError:
                        refused.append(time.perf_counter())
                    time.sleep(0.001)
            finally:
                connection.close()

        thread = threading.Thread(target=probe)
        thread.start()
        kms_seconds[0] = 0.0
        started = time.perf_counter()
        services.key_renew(actor=alice, key_id=key.pk)
        totals.append(ms(started))
        renew_kms.append(kms_seconds[0] * 1000)
        done.set()
        thread.join()
        locked.append((refused[-1] - refused[0]) * 1000 if refused else 0.0)

    # How long another thread waits while RSA-4096 keys are generated.
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            gaps.append(ms(started))

    thread = threading.Thread(target=ticker)
    thread.start()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        custody.wipe(custody.generate_material("RSA_4096"))
    generated = ms(started) / ROUNDS
    stop.set()
    thread.join()
    server.stop()
    return {
        "specs": specs,
        "rsa_4096_renew": {
            "locked_ms": statistics.median(locked),
            "total_ms": statistics.median(totals),
            "kms_ms": statistics.median(renew_kms),
        },
        "rsa_4096_stall": {"max_gap_ms": max(gaps), "generate_ms": generated},
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        print(json.dumps(_worker()))
    else:
        for row in run():
            print(row)
