"""The run of an approved request is claimed with a lease (approvals.services.execute).

A fresh claim keeps every other delivery of the task out; a claim older than
``BYOK_APPROVAL_LEASE_SECONDS`` is a run lost with its worker, claimed again by the next
delivery or the beat's sweep; a run that outlived its lease does not end a request that
another run took over. A real worker killed after its claim is in
``tests/tasks/test_approvals_worker.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest
from approvals.tasks import execute_soon
from audit.models import AuditEvent
from byok_portal.dual_control import ApprovalPending
from byok_portal.vocabulary import Operation
from keys.models import Key
from keys.operations import REGISTRY
from tests.approvals.conftest import set_policy
from tests.keys.helpers import public_pem

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(people: Any, keystore: Any, make_key: Any) -> ApprovalRequest:
    """bob's prepare_download of a key, approved by carol (its run not yet claimed)."""
    set_policy(keystore, export=1)
    key = make_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.PREPARE_DOWNLOAD].run(people.actor(people.bob), key.pk, {"public_key": public_pem()})
    request = ApprovalRequest.objects.get()
    services.approve(actor=people.actor(people.carol), request_id=request.pk)
    return ApprovalRequest.objects.get(pk=request.pk)


def claimed(request: ApprovalRequest, ago: dt.timedelta) -> None:
    ApprovalRequest.objects.filter(pk=request.pk).update(started_at=timezone.now() - ago)


def test_a_fresh_claim_keeps_another_delivery_out(approved: ApprovalRequest, settings: Any) -> None:
    settings.BYOK_APPROVAL_LEASE_SECONDS = 360
    claimed(approved, dt.timedelta(seconds=300))

    request = services.execute(approved.pk)

    assert request.state == "APPROVED"
    assert not AuditEvent.objects.filter(operation__in=["prepare_download", "execute_approval"]).exists()
    assert services.resume_stalled() == 0


def test_a_claim_older_than_its_lease_is_run_again_once(approved: ApprovalRequest, settings: Any) -> None:
    settings.BYOK_APPROVAL_LEASE_SECONDS = 360
    claimed(approved, dt.timedelta(seconds=400))
    queued: list[Any] = []
    services.run_with(queued.append)
    try:
        assert services.resume_stalled() == 1
    finally:
        services.run_with(execute_soon)

    first = services.execute(queued[0])
    again = services.execute(queued[0])

    assert (first.state, again.state) == ("EXECUTED", "EXECUTED")
    assert AuditEvent.objects.filter(operation="prepare_download", outcome="success").count() == 1
    (executed,) = AuditEvent.objects.filter(operation="execute_approval")
    assert executed.details["resumed"] is True
    assert "recovered" not in executed.details["result"]


def test_a_lost_run_that_did_the_operation_is_ended_without_doing_it_again(
    people: Any, approved: ApprovalRequest, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run's operation committed (its audit event names the request); then its worker died."""
    settings.BYOK_APPROVAL_LEASE_SECONDS = 360
    done_once = services.EXECUTORS["prepare_download"]
    calls: list[str] = []

    def lost_after_the_operation(actor: Any, request: ApprovalRequest) -> Any:
        calls.append("run")
        done_once(actor, request)
        raise SystemExit("the worker died here")  # not one of the errors execute() turns into FAILED

    monkeypatch.setitem(services.EXECUTORS, "prepare_download", lost_after_the_operation)
    with pytest.raises(SystemExit):
        services.execute(approved.pk)
    assert ApprovalRequest.objects.get(pk=approved.pk).state == "APPROVED"
    claimed(approved, dt.timedelta(seconds=400))

    request = services.execute(approved.pk)

    assert calls == ["run"]
    assert request.state == "EXECUTED"
    assert request.result is not None
    assert request.result["recovered"] is True
    assert AuditEvent.objects.filter(operation="prepare_download").count() == 1
    assert Key.objects.filter(approval_requests=approved, pending_approval=None).exists()


def test_a_run_that_outlived_its_lease_leaves_the_end_to_the_run_that_took_over(
    approved: ApprovalRequest, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BYOK_APPROVAL_LEASE_SECONDS = 360
    run = services.EXECUTORS["prepare_download"]

    def slow(actor: Any, request: ApprovalRequest) -> Any:
        result = run(actor, request)
        claimed(request, dt.timedelta(0))  # meanwhile another worker claimed the request again
        return result

    monkeypatch.setitem(services.EXECUTORS, "prepare_download", slow)

    request = services.execute(approved.pk)

    assert request.state == "APPROVED"
    assert not AuditEvent.objects.filter(operation="execute_approval").exists()
