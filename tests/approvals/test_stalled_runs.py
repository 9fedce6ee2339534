"""An approved request always ends: whatever its run raises, however often its worker dies, and by an admin's hand.

A request left APPROVED keeps its key from every other covered operation (one open
request per key), so every way a run can go wrong ends it FAILED, audited — and an
admin can end one whose run stalled, but never one a live run still holds.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from keys import custody, materials
from keys.models import Key
from tests.approvals.conftest import approve, set_policy
from tests.keys.helpers import sandbox_view
from tests.web import verified_client

pytestmark = pytest.mark.django_db

SECRET = "kek-label-SECRET-4711"


@pytest.fixture
def approved_deactivate(api_as: Any, people: Any, keystore: Any, new_key: Any, aws_sandbox: str) -> ApprovalRequest:
    """bob's deactivate of a real key, approved by carol; its run not started (the test runs it)."""
    set_policy(keystore, disable=1, destroy=1)
    key = new_key()
    asked = api_as(people.bob).post(f"/api/v1/keys/{key.pk}/deactivate/", expect=202).json()
    approve(api_as(people.carol), asked["approval_request"]["id"])
    return ApprovalRequest.objects.select_related("key").get()


def _key_of(request: ApprovalRequest) -> Key:
    assert request.key_id is not None
    return Key.objects.get(pk=request.key_id)


def _result(request: ApprovalRequest) -> dict[str, Any]:
    assert request.result is not None
    return dict(request.result)


def _lost_run(request: ApprovalRequest, *, runs: int = 1, ago: dt.timedelta = dt.timedelta(hours=2)) -> None:
    """The request as a run lost with its worker leaves it: claimed ``ago``, ``runs`` claims so far."""
    ApprovalRequest.objects.filter(pk=request.pk).update(started_at=timezone.now() - ago, runs=runs)


# --- any error ends the run ------------------------------------------------------------------


def test_an_unexpected_error_ends_the_request_failed_naming_only_the_class(
    approved_deactivate: ApprovalRequest, api_as: Any, people: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise custody.CustodyError(f"sealed under {SECRET}, which this portal does not have")

    monkeypatch.setattr(materials, "delete_all_materials", unreadable)

    request = services.execute(approved_deactivate.pk)

    assert request.state == "FAILED"
    assert _result(request)["code"] == "unexpected_error"
    assert _result(request)["error"] == "CustodyError"
    event = AuditEvent.objects.get(operation="execute_approval")
    assert (event.outcome, event.reason) == ("failed", "unexpected_error")
    trail = json.dumps([[e.error, e.details] for e in AuditEvent.objects.all()])
    assert SECRET not in trail
    assert SECRET not in json.dumps(request.result)
    # The key rolled back to where it was, and is free for the next request.
    key = _key_of(approved_deactivate)
    assert key.state == "ACTIVE"
    assert key.pending_approval is None
    monkeypatch.undo()
    again = api_as(people.bob).post(f"/api/v1/keys/{key.pk}/deactivate/", expect=202).json()
    assert again["approval_request"]["id"] != str(approved_deactivate.pk)
    # Nothing is resumed: the request has ended.
    assert services.resume_stalled(timezone.now() + dt.timedelta(days=1)) == 0


def test_a_run_that_kills_its_worker_every_time_is_not_taken_over_forever(
    approved_deactivate: ApprovalRequest, aws_sandbox: str, settings: Any
) -> None:
    settings.BYOK_APPROVAL_MAX_RUNS = 3
    _lost_run(approved_deactivate, runs=3)  # three runs claimed it, and each died with its worker

    request = services.execute(approved_deactivate.pk)

    assert (request.state, _result(request)["code"]) == ("FAILED", "run_abandoned")
    assert request.runs == 4
    key = _key_of(approved_deactivate)
    assert key.state == "ACTIVE"
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert AuditEvent.objects.get(operation="execute_approval").reason == "run_abandoned"


def test_a_lost_run_under_the_bound_is_taken_over_and_runs(
    approved_deactivate: ApprovalRequest, aws_sandbox: str, settings: Any
) -> None:
    settings.BYOK_APPROVAL_MAX_RUNS = 3
    _lost_run(approved_deactivate, runs=2)

    request = services.execute(approved_deactivate.pk)

    assert request.state == "EXECUTED"
    assert _key_of(approved_deactivate).state == "INACTIVE"


# --- a disabled requester ----------------------------------------------------------------------


def test_an_approved_run_of_a_requester_disabled_since_does_not_run(
    approved_deactivate: ApprovalRequest, people: Any, aws_sandbox: str
) -> None:
    people.bob.is_active = False
    people.bob.save()

    request = services.execute(approved_deactivate.pk)

    assert (request.state, _result(request)["code"]) == ("FAILED", "account_disabled")
    key = _key_of(approved_deactivate)
    assert key.state == "ACTIVE"
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert AuditEvent.objects.get(operation="execute_approval").reason == "account_disabled"
    assert not AuditEvent.objects.filter(operation="deactivate").exists()


def test_a_pending_request_of_a_disabled_requester_cannot_be_approved_and_says_why(
    api_as: Any, people: Any, keystore: Any, new_key: Any, aws_sandbox: str
) -> None:
    set_policy(keystore, disable=1)
    key = new_key()
    asked = api_as(people.bob).post(f"/api/v1/keys/{key.pk}/deactivate/", expect=202).json()["approval_request"]
    assert asked["requested_by"]["active"] is True
    people.bob.is_active = False
    people.bob.save()
    carol = api_as(people.carol)

    shown = carol.get(f"/api/v1/approvals/{asked['id']}/").json()
    refused = approve(carol, asked["id"], expect=409)

    assert shown["requested_by"]["active"] is False
    assert refused["code"] == "requester_disabled"
    assert ApprovalRequest.objects.get().state == "PENDING"
    assert AuditEvent.objects.filter(operation="approve", outcome="refused", reason="requester_disabled").exists()
    page = verified_client(people.carol).get(f"/approvals/{asked['id']}/").content.decode()
    assert 'id="requester-disabled"' in page
    # A rejection still ends it.
    carol.post(f"/api/v1/approvals/{asked['id']}/reject/", {"reason": "requester left"}, expect=200)
    assert ApprovalRequest.objects.get().state == "REJECTED"


# --- an admin ends a stalled request -----------------------------------------------------------


def test_an_admin_ends_a_stalled_approved_request_and_a_later_run_does_nothing(
    approved_deactivate: ApprovalRequest, api_as: Any, people: Any, aws_sandbox: str
) -> None:
    _lost_run(approved_deactivate)

    ended = api_as(people.alice).post(f"/api/v1/approvals/{approved_deactivate.pk}/end/", expect=200).json()

    assert (ended["state"], ended["result"]["code"]) == ("FAILED", "ended_by_admin")
    event = AuditEvent.objects.get(operation="end_approval")
    assert (event.outcome, event.actor_sub) == ("success", "alice")
    assert services.execute(approved_deactivate.pk).state == "FAILED"
    key = _key_of(approved_deactivate)
    assert (key.state, key.pending_approval) == ("ACTIVE", None)
    assert not AuditEvent.objects.filter(operation="deactivate").exists()


def test_ending_is_refused_while_a_live_run_holds_the_request(
    approved_deactivate: ApprovalRequest, api_as: Any, people: Any
) -> None:
    _lost_run(approved_deactivate, ago=dt.timedelta(seconds=5))

    refused = api_as(people.alice).post(f"/api/v1/approvals/{approved_deactivate.pk}/end/", expect=409).json()

    assert refused["code"] == "not_stalled"
    assert ApprovalRequest.objects.get().state == "APPROVED"
    assert AuditEvent.objects.filter(operation="end_approval", outcome="refused").exists()


def test_ending_needs_the_keystore_admin_role_and_an_approved_request(
    approved_deactivate: ApprovalRequest, api_as: Any, people: Any
) -> None:
    _lost_run(approved_deactivate)
    assert api_as(people.carol).post(f"/api/v1/approvals/{approved_deactivate.pk}/end/", expect=403)
    ApprovalRequest.objects.filter(pk=approved_deactivate.pk).update(state="PENDING")
    refused = api_as(people.alice).post(f"/api/v1/approvals/{approved_deactivate.pk}/end/", expect=409).json()
    assert refused["code"] == "not_stalled"


def test_a_stalled_request_whose_lost_run_had_done_the_operation_ends_executed(
    approved_deactivate: ApprovalRequest, api_as: Any, people: Any, aws_sandbox: str, monkeypatch: Any
) -> None:
    # The run did the operation and its worker died before it could end the request.
    monkeypatch.setattr(services, "_end", _dies_with_its_worker)
    with pytest.raises(_WorkerDied):
        services.execute(approved_deactivate.pk)
    monkeypatch.undo()
    _lost_run(approved_deactivate)

    ended = api_as(people.alice).post(f"/api/v1/approvals/{approved_deactivate.pk}/end/", expect=200).json()

    assert ended["state"] == "EXECUTED"
    assert ended["result"]["recovered"] is True
    assert _key_of(approved_deactivate).state == "INACTIVE"


class _WorkerDied(BaseException):
    """A worker killed mid-task: not an Exception, so nothing in the run catches it."""


def _dies_with_its_worker(*args: Any, **kwargs: Any) -> None:
    raise _WorkerDied


def test_the_page_and_the_admin_offer_the_end_of_a_stalled_request(
    approved_deactivate: ApprovalRequest, people: Any
) -> None:
    _lost_run(approved_deactivate)
    detail = f"/approvals/{approved_deactivate.pk}/"
    assert "End this request" not in verified_client(people.carol).get(detail).content.decode()
    alice = verified_client(people.alice)
    assert "End this request" in alice.get(detail).content.decode()

    response = alice.post(f"/approvals/{approved_deactivate.pk}/end/")

    assert response.status_code == 302
    assert ApprovalRequest.objects.get().state == "FAILED"
    # The admin site's action goes through the same service (and is refused the same way once it has ended).
    response = verified_client(people.root).post(
        "/admin/approvals/approvalrequest/",
        {"action": "end_stalled", "_selected_action": [str(approved_deactivate.pk)]},
    )
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("only an approved request" in text for text in texts), texts
