"""Celery work of dual control: run an approved request's operation, and expire what nobody decided in time."""

from __future__ import annotations

import uuid

from celery import shared_task

from approvals import services


@shared_task(name="approvals.tasks.execute_approval")
def execute_approval(request_id: str) -> str:
    """Run the approved request's operation as its requester (once, however often the task is delivered)."""
    return str(services.execute(uuid.UUID(request_id)).state)


@shared_task(name="approvals.tasks.expire_approvals")
def expire_approvals() -> int:
    """Celery beat: end the pending requests whose time is up, and resume approved ones whose run was lost."""
    services.resume_stalled()
    return services.expire_due()


def execute_soon(request_id: uuid.UUID) -> None:
    execute_approval.delay(str(request_id))
