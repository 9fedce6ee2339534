"""Bulk jobs at the KMS quotas' pace (issue 20), on PostgreSQL, Redis and real Celery workers.

``run()`` recreates the database ``byok_bench_jobs`` next to ``DATABASE_URL``'s and, in a
fresh process (``python -m bench.jobs_bench measure``):

- starts the sandbox AWS as its own process in quota mode (``--quota-scale``, default 10 ×
  AWS's default rates) and ``BENCH_JOB_WORKERS`` Celery workers (default 3) on Redis
  (``BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/14``, emptied first), the portal
  taking half of the sandbox's quota (``BYOK_KMS_QUOTA_SHARE`` = scale / 2);
- times the key list page (``GET /keys/``, 300 keys, signed in with a second factor) with
  nothing running, then runs one bulk job creating ``BENCH_JOB_KEYS`` keys (default 25) in
  each of two accounts, undisturbed; then a second such job while timing the same page
  over and over (one client, 50 ms between requests).

Figures: the job's throughput against the quota's theoretical limit (keys per second the
schedules allow: ``GetParametersForImport`` at 0.25/s × share per account, accounts side
by side), and the key list's median and 95th percentile latency while the job runs,
against the idle page.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._support import recreate_database, run_phase

DATABASE = "byok_bench_jobs"
REPO = Path(__file__).resolve().parent.parent


def _scale() -> float:
    return float(os.environ.get("BENCH_QUOTA_SCALE", "10"))


def _redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def _env() -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": _redis_url(),
        "BYOK_KMS_QUOTA_SHARE": str(_scale() / 2),
        "BYOK_KMS_QUOTA_REDIS_URL": _redis_url(),
        "BYOK_SANDBOX": "true",
        "BYOK_AWS_PRINCIPAL_ARN": "arn:aws:iam::000000000000:role/byok-portal",
        "CELERY_VISIBILITY_TIMEOUT": "300",
    }


def run() -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    figures = run_phase("jobs_bench", DATABASE, "measure", env=_env())
    share = f"sandbox at {_scale():g}× AWS's rates, portal share {_scale() / 2:g}× (half)"
    return [
        {
            "figure": f"bulk create job, {figures['keys']} keys in 2 accounts, {figures['workers']} workers",
            "value": figures["keys_per_second"],
            "unit": "keys/s",
            "baseline": figures["quota_keys_per_second"],
            "ratio": figures["ratio"],
            "note": f"baseline: the quota's theoretical limit; {share}; {figures['seconds']:.1f} s vs "
            f"{figures['quota_seconds']:.1f} s; {figures['throttled']} throttled calls in both jobs",
        },
        {
            "figure": "GET /keys/ (300 keys) while the bulk job runs, median",
            "value": figures["busy_median_ms"],
            "unit": "ms",
            "baseline": figures["idle_median_ms"],
            "ratio": round(figures["busy_median_ms"] / figures["idle_median_ms"], 2),
            "note": f"baseline: the same page with no job running; {figures['busy_requests']} requests during a "
            f"second job, which took {figures['loaded_seconds']:.1f} s under that load",
        },
        {
            "figure": "GET /keys/ (300 keys) while the bulk job runs, 95th percentile",
            "value": figures["busy_p95_ms"],
            "unit": "ms",
            "baseline": figures["idle_p95_ms"],
            "ratio": round(figures["busy_p95_ms"] / figures["idle_p95_ms"], 2),
            "note": "one client, in-process Django test client through the full middleware stack",
        },
    ]


# --- the measuring process (Django set up on the bench database) ---------------------


def _start_sandbox() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_aws", "--port", "0", "--quota-scale", str(_scale())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "sandbox AWS listening on http://127.0.0.1:PORT (...)"
    return process, line.split(" on ", 1)[1].split()[0]


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "byok_portal.celery", "worker", "--pool", "solo"),
                *("--without-gossip", "--without-mingle", "--loglevel", "INFO", "--hostname", f"{log.stem}@%h"),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return process


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _measure() -> dict[str, Any]:
    import redis
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from accounts.identity import Actor
    from accounts.models import User
    from byok_portal import aws
    from byok_portal.vocabulary import KeyState, KmsState
    from jobs import services
    from jobs.models import Job, JobState
    from keys.models import Key
    from keystores import sandbox
    from keystores.services import keystore_create
    from tests.web import verified_client

    redis.Redis.from_url(_redis_url()).flushdb()
    call_command("migrate", verbosity=0)
    sandbox_process, sandbox_url = _start_sandbox()
    settings.BYOK_SANDBOX_URL = sandbox_url
    workers: list[subprocess.Popen[bytes]] = []
    try:
        user = User.objects.create_user(username="bench-custodian", password="bench-custodian-password")
        user.user_permissions.add(Permission.objects.get(codename="add_keystore"))
        user = User.objects.get(pk=user.pk)
        actor = Actor.for_user(user)
        stores = []
        for account in ("210000000001", "210000000002"):
            store = keystore_create(
                actor=actor,
                name=f"bench-{account}",
                aws_account_id=account,
                region="eu-west-1",
                role_arn=f"arn:aws:iam::{account}:role/byok",
            )
            sandbox.create_role(store)
            aws.kms_for(store).probe()
            stores.append(store)
        Key.objects.bulk_create(
            Key(
                keystore=stores[n % 2],
                name=f"listed-{n:04}",
                state=KeyState.ACTIVE,
                kms_state=KmsState.ENABLED,
                kcv="ABC123",
                kms_key_arn=f"arn:aws:kms:eu-west-1:{stores[n % 2].aws_account_id}:key/listed-{n:04}",
            )
            for n in range(300)
        )
        env = {**os.environ, "BYOK_SANDBOX_URL": sandbox_url, "DATABASE_CONN_MAX_AGE": "0"}
        logs = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
        count = int(os.environ.get("BENCH_JOB_WORKERS", "3"))
        workers = [_start_worker(env, logs / f"worker-{i}.log") for i in range(count)]

        client = verified_client(user)

        def one() -> float:
            started = time.perf_counter()
            response = client.get("/keys/")
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"/keys/ answered {response.status_code}")
            return elapsed

        for _ in range(10):
            one()
        idle = [one() for _ in range(100)]

        per_account = int(os.environ.get("BENCH_JOB_KEYS", "25"))

        def bulk_create(prefix: str, busy: list[float] | None) -> Job:
            """One create job; with ``busy``, the key list is timed over and over while it runs."""
            job = services.job_create(
                actor=actor,
                request=services.JobRequest(
                    operation="create",
                    keystores=[s.pk for s in stores],
                    names=[f"{prefix}-{i:04}" for i in range(per_account)],
                ),
            )
            deadline = time.monotonic() + 600
            while Job.objects.filter(pk=job.pk, state__in=(JobState.QUEUED, JobState.RUNNING)).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the job did not finish within 10 minutes")
                if busy is None:
                    time.sleep(0.2)
                else:
                    busy.append(one())
                    time.sleep(0.05)
            job.refresh_from_db()
            if job.state != JobState.DONE or job.failed:
                raise RuntimeError(f"the job ended {job.state} with {job.failed} failures")
            return job

        def seconds_of(job: Job) -> float:
            assert job.finished_at is not None
            return (job.finished_at - job.created_at).total_seconds()

        job = bulk_create("alone", None)
        seconds = seconds_of(job)
        busy: list[float] = []
        loaded_seconds = seconds_of(bulk_create("loaded", busy))
        quota_seconds = services.quota_seconds("create", {s.pk: per_account for s in stores})
        with urllib.request.urlopen(f"{sandbox_url}/_sandbox/calls/log") as response:
            throttled = sum(1 for call in json.loads(response.read())["calls"] if call["throttled"])
        return {
            "keys": job.total,
            "workers": count,
            "seconds": seconds,
            "quota_seconds": quota_seconds,
            "keys_per_second": round(job.total / seconds, 2),
            "quota_keys_per_second": round(job.total / quota_seconds, 2),
            "ratio": round(quota_seconds / seconds, 2),
            "loaded_seconds": loaded_seconds,
            "throttled": throttled,
            "idle_median_ms": round(statistics.median(idle) * 1000, 1),
            "idle_p95_ms": round(_percentile(idle, 0.95) * 1000, 1),
            "busy_median_ms": round(statistics.median(busy) * 1000, 1),
            "busy_p95_ms": round(_percentile(busy, 0.95) * 1000, 1),
            "busy_requests": len(busy),
        }
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        sandbox_process.terminate()
        sandbox_process.wait(30)


if __name__ == "__main__":
    import django

    django.setup()
    print(json.dumps(_measure()))
