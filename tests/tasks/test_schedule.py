"""Beat schedules in code with environment overrides, and the embedded broker `make run` uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from celery.schedules import crontab
from django.conf import settings

from tests.tasks.conftest import REPO, Worker

SCHEDULED_TASKS = {
    "keys.tasks.cleanup_due_keys",
    "keys.tasks.reconcile_all",
    "keys.tasks.warn_expiring_keys",
    "keys.tasks.rotate_due_keys",
    "keys.tasks.reimport_expiring_materials",
    "approvals.tasks.expire_approvals",
}


def settings_in_subprocess(**env: str) -> dict[str, Any]:
    """The beat schedule as a fresh process with ``env`` sees it (settings are read once, at start)."""
    code = (
        "import json, django; django.setup()\n"
        "from django.conf import settings\n"
        "out = {}\n"
        "for name, entry in settings.CELERY_BEAT_SCHEDULE.items():\n"
        "    s = entry['schedule']\n"
        "    out[name] = {'task': entry['task'], 'schedule': s if isinstance(s, float) else "
        "[sorted(s.hour), sorted(s.minute)]}\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_scheduled_task_exists_and_is_idempotent_by_design() -> None:
    from byok_portal.celery import app

    app.loader.import_default_modules()
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} == SCHEDULED_TASKS
    for name in SCHEDULED_TASKS:
        assert app.tasks[name].acks_late is True


def test_the_defaults_run_cleanup_and_warnings_daily_and_reconciliation_hourly() -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["daily-cleanup"]["schedule"] == crontab(minute=15, hour=2)
    assert schedule["expiry-warnings"]["schedule"] == crontab(minute=0, hour=6)
    assert schedule["reconcile"]["schedule"] == 3600.0
    # Hourly: a material valid for a day is re-imported in time (SPEC §10).
    assert schedule["reimport-expiring-materials"]["schedule"] == crontab(minute=45)


def test_the_environment_overrides_the_schedules() -> None:
    schedule = settings_in_subprocess(
        BYOK_CLEANUP_HOUR="4",
        BYOK_CLEANUP_MINUTE="45",
        BYOK_RECONCILE_INTERVAL_SECONDS="600",
        BYOK_EXPIRY_WARNING_HOUR="9",
    )

    assert schedule["daily-cleanup"] == {"task": "keys.tasks.cleanup_due_keys", "schedule": [[4], [45]]}
    assert schedule["reconcile"] == {"task": "keys.tasks.reconcile_all", "schedule": 600.0}
    assert schedule["expiry-warnings"] == {"task": "keys.tasks.warn_expiring_keys", "schedule": [[9], [0]]}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_run_scheduled_tasks_on_the_filesystem_broker(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    """What `make run` starts: ``celery worker --beat`` with no broker process at all."""
    var = tmp_path / "var"
    (var / "celery" / "queue").mkdir(parents=True)
    (var / "celery" / "processed").mkdir(parents=True)
    env = {k: v for k, v in worker_env.items() if k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env.update(CELERY_BROKER_URL="filesystem://", BYOK_VAR_DIR=str(var), BYOK_RECONCILE_INTERVAL_SECONDS="1")
    log = tmp_path / "celery.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "byok_portal",
            "worker",
            "--beat",
            "--concurrency",
            "1",
            "--schedule",
            str(var / "celery" / "beat-schedule"),
            "--loglevel",
            "INFO",
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(env, log)
    worker.process = process
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and "keys.tasks.reconcile_all[" not in _succeeded(log):
            assert process.poll() is None, worker.log()
            time.sleep(0.2)
        assert "keys.tasks.reconcile_all[" in _succeeded(log), worker.log()
    finally:
        worker.stop()


def _succeeded(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(line for line in text.splitlines() if "succeeded in" in line)
