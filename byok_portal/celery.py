"""The Celery application. Tasks live in each app's ``tasks.py`` and take ids only."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "byok_portal.settings")

app = Celery("byok_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Task outcomes for /metrics (SPEC §14); the counts reach /metrics through PROMETHEUS_MULTIPROC_DIR.
def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", sender))


@signals.task_success.connect
def _task_succeeded(sender: Any = None, **kwargs: Any) -> None:
    from byok_portal import metrics

    metrics.count_task(_task_name(sender), "success")


@signals.task_failure.connect
def _task_failed(sender: Any = None, **kwargs: Any) -> None:
    from byok_portal import metrics

    metrics.count_task(_task_name(sender), "failure")


@signals.task_retry.connect
def _task_retried(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    from byok_portal import metrics

    metrics.count_task(str(getattr(request, "task", "") or _task_name(sender)), "retry")


@signals.worker_process_shutdown.connect
def _worker_process_gone(pid: int | None = None, **kwargs: Any) -> None:
    from byok_portal import metrics

    if pid:
        metrics.mark_process_dead(pid)
