"""An approved request's operation runs on a real Celery worker, on the real Redis (SPEC §12).

The approval that reaches the quorum hands the request to Celery after its transaction
commits; the worker runs the operation as the requester against the sandbox AWS.
The beat task that expires requests runs on the worker too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalPolicy, ApprovalRequest
from audit.models import AuditEvent
from byok_portal.dual_control import ApprovalPending
from byok_portal.vocabulary import KeyState, Operation
from keys.models import Key
from keys.operations import REGISTRY
from tests.keys.helpers import public_pem, sandbox_view
from tests.tasks.test_worker import RESULT_TIMEOUT, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_approval_that_reaches_the_quorum_has_a_worker_run_the_operation(
    people: Any, keystore: Any, aws_sandbox: str, start_worker: Any, portal_broker: str
) -> None:
    ApprovalPolicy.objects.create(keystore=keystore, destroy=1)
    bob = people.actor(people.bob)
    key = REGISTRY[Operation.CREATE].run(bob, keystore.pk, {"name": "orders"}).key
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.SCHEDULE_DELETION].run(bob, key.pk, {"pending_window_days": 7})
    request = ApprovalRequest.objects.get()
    start_worker()

    services.approve(actor=people.actor(people.carol), request_id=request.pk)

    wait_for(lambda: ApprovalRequest.objects.get(pk=request.pk).state == "EXECUTED", timeout=RESULT_TIMEOUT)
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION
    assert key.pending_approval is None
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingDeletion"
    event = AuditEvent.objects.get(operation="schedule_deletion", outcome="success")
    assert event.actor_sub == "bob"
    assert event.details["approval"]["approvers"] == [{"iss": "local", "sub": "carol", "name": "carol"}]


def test_the_beat_task_expires_requests_on_a_worker(
    people: Any, keystore: Any, make_key: Any, start_worker: Any, celery_client: Any
) -> None:
    ApprovalPolicy.objects.create(keystore=keystore, disable=1)
    key = make_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.DEACTIVATE].run(people.actor(people.bob), key.pk)
    ApprovalRequest.objects.update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    start_worker()

    assert celery_client.send_task("approvals.tasks.expire_approvals").get(timeout=RESULT_TIMEOUT) == 1

    assert ApprovalRequest.objects.get().state == "EXPIRED"
    assert Key.objects.get(pk=key.pk).pending_approval is None


def test_an_approved_request_whose_message_was_lost_is_run_by_the_beat_task(
    people: Any, keystore: Any, make_key: Any, start_worker: Any, celery_client: Any
) -> None:
    """The approval's hand-over went nowhere (the suite's own broker is in memory); the beat task resumes it."""
    ApprovalPolicy.objects.create(keystore=keystore, export=1)
    key = make_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.PREPARE_DOWNLOAD].run(people.actor(people.bob), key.pk, {"public_key": public_pem()})
    services.approve(actor=people.actor(people.carol), request_id=ApprovalRequest.objects.get().pk)
    assert ApprovalRequest.objects.get().state == "APPROVED"
    ApprovalRequest.objects.update(decided_at=timezone.now() - dt.timedelta(minutes=5))
    start_worker()

    # The beat task on the worker hands the request to the worker (its own broker is this Redis).
    assert celery_client.send_task("approvals.tasks.expire_approvals").get(timeout=RESULT_TIMEOUT) == 0

    wait_for(lambda: ApprovalRequest.objects.get().state == "EXECUTED", timeout=RESULT_TIMEOUT)
    assert Key.objects.get(pk=key.pk).download_prepared_by_sub == "bob"
