"""The daily rotation under a ``change_material`` policy: one request, opened by the portal, awaited — not failed.

The scheduler is not a person: its request counts approvals from people, as every
request does, and none of them is excluded as its requester (docs: README, "Dual control").
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from django.utils import timezone

from accounts.identity import Actor
from approvals import services
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from byok_portal.vocabulary import Operation
from keys.jobs.rotation import rotate_due_keys
from keys.models import Key
from keys.operations import REGISTRY
from tests.approvals.conftest import set_policy

pytestmark = pytest.mark.django_db
ROTATION = Actor.system("rotation")


@pytest.fixture
def due_key(people: Any, keystore: Any, aws_sandbox: str) -> Key:
    key = (
        REGISTRY[Operation.CREATE]
        .run(people.actor(people.bob), keystore.pk, {"name": "orders", "rotation_period_days": 90})
        .key
    )
    Key.objects.filter(pk=key.pk).update(next_rotation_date=timezone.localdate())
    return key


def test_a_due_key_under_approval_awaits_it_with_one_request_however_many_days_pass(
    people: Any, keystore: Any, due_key: Key, caplog: Any
) -> None:
    set_policy(keystore, change_material=1)
    caplog.set_level(logging.INFO, logger="byok.jobs")

    first = rotate_due_keys(actor=ROTATION, pace_seconds=0)
    second = rotate_due_keys(actor=ROTATION, today=timezone.localdate() + dt.timedelta(days=1), pace_seconds=0)

    assert (first.awaiting_approval, first.failed, first.rotated) == (1, 0, 0)
    assert (second.awaiting_approval, second.failed, second.rotated) == (1, 0, 0)
    request = ApprovalRequest.objects.get()
    assert (request.operation, request.requester, request.state) == ("rotate", ("system", "rotation"), "PENDING")
    assert AuditEvent.objects.filter(operation="request_approval").count() == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "byok.jobs"]
    assert [r.getMessage() for r in caplog.records if r.name == "byok.jobs"] == [
        "scheduled rotation awaits approval"
    ] * 2

    # Any one approver (the scheduler is nobody to exclude) lets it run, as the scheduler, naming the approver.
    services.approve(actor=people.actor(people.carol), request_id=request.pk)
    done = services.execute(request.pk)

    assert done.state == "EXECUTED"
    due_key.refresh_from_db()
    assert (due_key.material_version, due_key.rotations) == (2, 1)
    rotated = AuditEvent.objects.get(operation="rotate", outcome="success")
    assert (rotated.actor_iss, rotated.actor_sub) == ("system", "rotation")
    assert [a["sub"] for a in rotated.details["approval"]["approvers"]] == ["carol"]


def test_a_due_key_held_by_someone_elses_open_request_is_skipped_not_failed(
    people: Any, keystore: Any, due_key: Key
) -> None:
    set_policy(keystore, change_material=1, disable=1)
    with pytest.raises(Exception, match="approval"):
        REGISTRY[Operation.DEACTIVATE].run(people.actor(people.bob), due_key.pk)

    summary = rotate_due_keys(actor=ROTATION, pace_seconds=0)

    assert (summary.skipped, summary.failed, summary.awaiting_approval) == (1, 0, 0)
    assert ApprovalRequest.objects.get().operation == "deactivate"
