"""Celery task of bulk jobs: one lane (a keystore's items) at a time, idempotent, acknowledged late."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Any

from celery import shared_task
from django.conf import settings

from jobs import services


@shared_task(acks_late=True)
def run_lane(job_id: str, lane: str) -> dict[str, Any]:
    """Work one lane of a job within the task's time budget; what is left goes to a new task.

    A worker killed mid-item leaves the message unacknowledged: it comes back to another
    worker, which goes on with the lane and takes the interrupted item once its lease is over.
    """
    result = services.run_lane(
        uuid.UUID(job_id),
        uuid.UUID(lane),
        until=time.monotonic() + settings.BYOK_TASK_BUDGET_SECONDS,
        limit=settings.BYOK_JOB_ITEMS_PER_TASK,
    )
    if result.more:
        run_lane.delay(job_id, lane)
    return asdict(result)


def start_lane(job_id: str, lane: str) -> None:
    run_lane.delay(job_id, lane)
