"""Celery tasks of notifications: thin callers of :mod:`notifications.services`, taking ids only."""

from __future__ import annotations

import logging
import uuid

from celery import Task, shared_task

from notifications import services

logger = logging.getLogger("byok.notifications")


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def fan_out(seq: int) -> int:
    """Deliveries and emails for audit event ``seq`` (idempotent; retried if email or the database fails)."""
    return services.fan_out(seq)


@shared_task(bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self: Task[..., None], delivery_id: str) -> None:
    """One attempt of a webhook delivery; a failed one comes back after an exponential, capped backoff."""
    delay = services.attempt_delivery(uuid.UUID(delivery_id))
    if delay is not None:
        raise self.retry(countdown=delay)


def queue_fan_out(seq: int) -> None:
    fan_out.delay(seq)


def queue_delivery(delivery_id: uuid.UUID) -> None:
    try:
        deliver_webhook.delay(str(delivery_id))
    except Exception:  # the broker is away: the delivery stays PENDING in the log
        logger.warning("could not queue a webhook delivery", extra={"delivery": str(delivery_id)}, exc_info=True)
