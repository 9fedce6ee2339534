"""Two approvers taking the last slot at once, and duplicated deliveries of the task: the operation runs once.

The request's row lock serialises decisions; the execution claims the APPROVED request with one
conditional UPDATE. Both need PostgreSQL (SQLite ignores SELECT ... FOR UPDATE).
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import pytest
from django.db import connection

from approvals import services
from approvals.models import ApprovalRequest
from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.dual_control import ApprovalPending
from byok_portal.vocabulary import Operation
from keys.operations import REGISTRY
from tests.approvals.conftest import set_policy
from tests.keys.helpers import sandbox_view
from tests.keys.test_concurrency import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL=postgres://...)")


def test_two_approvers_taking_the_last_slot_at_once_run_the_operation_exactly_once(
    people: Any, keystore: Any, new_key: Any, aws_sandbox: str
) -> None:
    set_policy(keystore, destroy=2)
    key = new_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.SCHEDULE_DELETION].run(people.actor(people.bob), key.pk, {"pending_window_days": 7})
    request = ApprovalRequest.objects.get()
    services.approve(actor=people.actor(people.root), request_id=request.pk)

    # carol and alice approve the last slot at the same moment, four times each.
    approvers = [people.actor(people.carol), people.actor(people.alice)] * 4
    turn = iter(approvers)

    def approve_as_next() -> None:
        services.approve(actor=next(turn), request_id=request.pk)

    outcomes = Counter(race(approve_as_next))

    request.refresh_from_db()
    assert request.state == "APPROVED"
    assert request.approvals.count() == 2
    # One approval reached the quorum; the other approver's attempts came too late, or counted once as a no-op.
    quorum = AuditEvent.objects.filter(operation="approve", outcome="success", details__quorum=True)
    assert quorum.count() == 1
    assert outcomes["ok"] + outcomes["AlreadyDecided"] == 8
    assert outcomes["ok"] >= 1

    # The task delivered eight times at once (redelivery, two workers): one run.
    runs = Counter(race(partial(services.execute, request.pk)))
    assert runs == {"ok": 8}
    request.refresh_from_db()
    assert request.state == "EXECUTED"
    assert AuditEvent.objects.filter(operation="schedule_deletion", outcome="success").count() == 1
    assert AuditEvent.objects.filter(operation="execute_approval").count() == 1
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingDeletion"
    assert verify().ok
