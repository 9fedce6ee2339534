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


def download_request_approved_by_carol(people: Any, keystore: Any, key: Key) -> ApprovalRequest:
    """bob asks to prepare a download of ``key`` under a policy of one export approval; carol approves."""
    ApprovalPolicy.objects.create(keystore=keystore, export=1)
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.PREPARE_DOWNLOAD].run(people.actor(people.bob), key.pk, {"public_key": public_pem()})
    services.approve(actor=people.actor(people.carol), request_id=ApprovalRequest.objects.get().pk)
    return ApprovalRequest.objects.get()


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
    key = make_key()
    assert download_request_approved_by_carol(people, keystore, key).state == "APPROVED"
    ApprovalRequest.objects.update(decided_at=timezone.now() - dt.timedelta(minutes=5))
    start_worker()

    # The beat task on the worker hands the request to the worker (its own broker is this Redis).
    assert celery_client.send_task("approvals.tasks.expire_approvals").get(timeout=RESULT_TIMEOUT) == 0

    wait_for(lambda: ApprovalRequest.objects.get().state == "EXECUTED", timeout=RESULT_TIMEOUT)
    assert Key.objects.get(pk=key.pk).download_prepared_by_sub == "bob"


@pytest.mark.parametrize("killed", ["before", "after"])
def test_a_run_lost_with_its_killed_worker_is_claimed_again_and_the_operation_happens_once(
    people: Any, keystore: Any, make_key: Any, start_worker: Any, portal_broker: str, killed: str
) -> None:
    """SIGKILL after the claim, ``before`` the operation or ``after`` it (committed, the request not yet ended):
    the redelivered task claims the run again once its lease is over, and the operation happens once."""
    ApprovalPolicy.objects.create(keystore=keystore, export=1)
    key = make_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.PREPARE_DOWNLOAD].run(people.actor(people.bob), key.pk, {"public_key": public_pem()})
    request = ApprovalRequest.objects.get()
    prepared = AuditEvent.objects.filter(operation="prepare_download", key_id=key.pk)
    lease = {"BYOK_APPROVAL_LEASE_SECONDS": "2"}
    first = start_worker(BYOK_TEST_APPROVAL_STALL=f"{killed}:120", **lease)

    services.approve(actor=people.actor(people.carol), request_id=request.pk)
    if killed == "before":
        wait_for(lambda: ApprovalRequest.objects.get().started_at is not None, timeout=RESULT_TIMEOUT)
    else:
        wait_for(prepared.exists, timeout=RESULT_TIMEOUT)
    first.kill()
    lost = ApprovalRequest.objects.get()
    assert (lost.state, prepared.count()) == ("APPROVED", 0 if killed == "before" else 1)
    start_worker(**lease)

    wait_for(lambda: ApprovalRequest.objects.get().state != "APPROVED", timeout=RESULT_TIMEOUT)
    request.refresh_from_db()
    assert request.state == "EXECUTED"
    assert request.started_at is not None
    assert lost.started_at is not None
    assert request.started_at > lost.started_at  # claimed again
    assert Key.objects.get(pk=key.pk).download_prepared_by_sub == "bob"
    assert Key.objects.get(pk=key.pk).pending_approval is None
    (event,) = prepared
    assert (event.outcome, event.actor_sub) == ("success", "bob")
    assert event.details["approval"]["request"] == str(request.pk)
    (executed,) = AuditEvent.objects.filter(operation="execute_approval")
    assert (executed.outcome, executed.details["resumed"]) == ("success", True)
    assert executed.details["result"].get("recovered", False) is (killed == "after")


def test_the_beat_task_resumes_a_run_whose_worker_died_and_whose_message_is_gone(
    people: Any, keystore: Any, make_key: Any, start_worker: Any, celery_client: Any
) -> None:
    download_request_approved_by_carol(people, keystore, make_key())
    # Claimed ten minutes ago by a worker that is gone, with its message (the worker's lease: the default).
    ApprovalRequest.objects.update(started_at=timezone.now() - dt.timedelta(minutes=10))
    start_worker()

    assert celery_client.send_task("approvals.tasks.expire_approvals").get(timeout=RESULT_TIMEOUT) == 0

    wait_for(lambda: ApprovalRequest.objects.get().state == "EXECUTED", timeout=RESULT_TIMEOUT)
    assert AuditEvent.objects.filter(operation="prepare_download", outcome="success").count() == 1
