"""Fixtures of the notification tests: members with email addresses, and the pipeline run in this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from notifications import services, tasks
from tests.tasks.conftest import backdoor, make_due_key, make_key  # noqa: F401 - fixtures shared with the task tests
from tests.tasks.test_webhooks import receiver  # noqa: F401 - the real HTTP receiver of the worker tests


@pytest.fixture
def addressed(people: Any, keystore: Any) -> Any:
    """Every member of ``keystore`` with an email address (alice has hers already), eve (no role) too."""
    for user in (people.bob, people.carol, people.dan, people.eve):
        user.email = f"{user.username}@example.com"
        user.save(update_fields=["email"])
    return people


@pytest.fixture
def in_process() -> Iterator[list[uuid.UUID]]:
    """Fan-out runs right after each commit in this process (as the worker would); returns the queued deliveries.

    The real fan-out is installed in place of the Celery queueing, which the worker tests cover.
    """
    queued: list[uuid.UUID] = []
    services.queue_with(fan_out=services.fan_out, delivery=queued.append)
    try:
        yield queued
    finally:
        services.queue_with(fan_out=tasks.queue_fan_out, delivery=tasks.queue_delivery)
