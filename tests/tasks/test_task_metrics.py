"""Celery task outcomes reach /metrics from the worker's process, through prometheus-client's multiprocess files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import CeleryError
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-token-for-tests"


def task_outcomes() -> dict[tuple[str, str], float]:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {
        (sample.labels["task"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == "byok_celery_tasks_total"
    }


def test_a_workers_task_outcomes_are_served_by_the_web_process(
    start_worker: Any, celery_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    settings.BYOK_METRICS_TOKEN = TOKEN
    start_worker(PROMETHEUS_MULTIPROC_DIR=str(shared))

    assert celery_client.send_task("keys.tasks.cleanup_due_keys").get(timeout=60) == {"cleaned": 0, "batches": 0}
    with pytest.raises((TypeError, CeleryError)):
        celery_client.send_task("keys.tasks.cleanup_due_keys", args=["unexpected"]).get(timeout=60)
    # This process serves /metrics as a gunicorn worker does: from the directory every process writes to.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    outcomes = task_outcomes()

    assert outcomes[("keys.tasks.cleanup_due_keys", "success")] == 1
    assert outcomes[("keys.tasks.cleanup_due_keys", "failure")] == 1
    assert any(path.name.startswith("counter_") for path in shared.iterdir())
