"""The rules of an approval request (SPEC §12), and the ways around them that must not work.

The requester cannot approve (by any account or token of theirs), a person counts once,
one rejection ends it, the requester may cancel, time ends it, and an approved operation
meets the key as it is then: a state that no longer allows it ends the request FAILED,
with nothing done in KMS. Every refusal is audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.utils import timezone

from accounts.identity import SESSION_IDENTITY_KEY
from accounts.models import User
from approvals import services
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from byok_portal.vocabulary import Operation
from keys.models import Key
from keys.operations import REGISTRY
from keystores.models import Role
from keystores.services import membership_remove, membership_set
from tests.approvals.conftest import approve, set_policy
from tests.keys.helpers import kms_client, sandbox_view
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def _ask(api_as: Any, people: Any, key: Key, slug: str = "schedule-deletion", body: Any = None) -> str:
    response = api_as(people.bob).post(f"/api/v1/keys/{key.pk}/{slug}/", body, expect=202)
    request_id: str = response.json()["approval_request"]["id"]
    return request_id


def _refusals(operation: str, reason: str) -> int:
    return AuditEvent.objects.filter(operation=operation, outcome="refused", reason=reason).count()


def test_the_requester_cannot_approve_their_own_request(api_as: Any, people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, destroy=1)
    request_id = _ask(api_as, people, new_key())

    body = approve(api_as(people.bob), request_id, expect=403)

    assert body["code"] == "self_approval"
    assert ApprovalRequest.objects.get().state == "PENDING"
    assert _refusals("approve", "self_approval") == 1


def test_a_second_account_of_the_requester_is_the_same_person(
    api_as: Any, people: Any, keystore: Any, new_key: Any
) -> None:
    """An account logged in with the requester's ID token (same ``(iss, sub)``) is the requester, and counts once."""
    set_policy(keystore, destroy=2)
    request_id = _ask(api_as, people, new_key())
    second = User.objects.create_user(username="bob-second", password="x" * 16)
    membership_set(actor=people.actor(people.alice), keystore_id=keystore.pk, user=second, role=Role.CUSTODIAN)
    client = verified_client(second)
    session = client.session
    session[SESSION_IDENTITY_KEY] = ["local", "bob"]  # what the OIDC login keeps: the ID token's (iss, sub)
    session.save()

    response = client.post(f"/api/v1/approvals/{request_id}/approve/", content_type="application/json")

    assert response.status_code == 403
    assert response.json()["code"] == "self_approval"
    assert _refusals("approve", "self_approval") == 1
    assert AuditEvent.objects.filter(operation="approve", outcome="refused", actor_sub="bob").exists()


def test_a_double_approval_counts_once_whatever_the_account(
    api_as: Any, people: Any, keystore: Any, new_key: Any
) -> None:
    set_policy(keystore, destroy=2)
    request_id = _ask(api_as, people, new_key())
    carol = api_as(people.carol)
    approve(carol, request_id)
    again = approve(carol, request_id)
    # carol's second account, logged in with carol's ID token: still carol.
    second = User.objects.create_user(username="carol-second", password="x" * 16)
    membership_set(actor=people.actor(people.alice), keystore_id=keystore.pk, user=second, role=Role.CUSTODIAN)
    client = verified_client(second)
    session = client.session
    session[SESSION_IDENTITY_KEY] = ["local", "carol"]
    session.save()
    third = client.post(f"/api/v1/approvals/{request_id}/approve/", content_type="application/json").json()

    assert [a["sub"] for a in again["approvals"]] == ["carol"]
    assert [a["sub"] for a in third["approvals"]] == ["carol"]
    assert third["state"] == "PENDING"
    assert AuditEvent.objects.filter(operation="approve", outcome="noop").count() == 2


def test_one_rejection_ends_the_request(api_as: Any, people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, destroy=2)
    key = new_key()
    request_id = _ask(api_as, people, key)
    approve(api_as(people.carol), request_id)

    rejected = api_as(people.alice).post(
        f"/api/v1/approvals/{request_id}/reject/", {"reason": "Still in use by billing."}, expect=200
    )

    assert (rejected.json()["state"], rejected.json()["reason"]) == ("REJECTED", "Still in use by billing.")
    assert approve(api_as(people.root), request_id, expect=409)["code"] == "already_decided"
    assert Key.objects.get(pk=key.pk).state == "ACTIVE"
    assert Key.objects.get(pk=key.pk).pending_approval is None
    assert AuditEvent.objects.filter(operation="reject", outcome="success", actor_sub="alice").exists()


def test_an_auditor_can_neither_approve_nor_reject(api_as: Any, people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, destroy=1)
    request_id = _ask(api_as, people, new_key())
    dan = api_as(people.dan)
    assert approve(dan, request_id, expect=403)["code"] == "permission_denied"
    assert dan.post(f"/api/v1/approvals/{request_id}/reject/", {}, expect=403).json()["code"] == "permission_denied"
    assert approve(api_as(people.eve), request_id, expect=404)["code"] == "not_found"
    assert ApprovalRequest.objects.get().state == "PENDING"


def test_the_requester_may_cancel_and_nobody_else(api_as: Any, people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, destroy=1)
    key = new_key()
    request_id = _ask(api_as, people, key)
    url = f"/api/v1/approvals/{request_id}/cancel/"
    assert api_as(people.carol).post(url, expect=403).json()["code"] == "permission_denied"

    assert api_as(people.bob).post(url, expect=200).json()["state"] == "CANCELLED"
    assert approve(api_as(people.carol), request_id, expect=409)["code"] == "already_decided"
    assert Key.objects.get(pk=key.pk).pending_approval is None
    # The key is free for a new request.
    assert _ask(api_as, people, key) != request_id


def test_a_second_request_on_a_key_with_one_open_is_refused(
    api_as: Any, people: Any, keystore: Any, new_key: Any
) -> None:
    set_policy(keystore, destroy=1, disable=1)
    key = new_key()
    first = _ask(api_as, people, key)
    # The same request again (a retry) is the same request; another one is a 409.
    assert _ask(api_as, people, key) == first
    refused = api_as(people.carol).post(f"/api/v1/keys/{key.pk}/deactivate/", expect=409).json()
    assert (refused["reason"], refused["approval_request"]) == ("approval_pending", first)
    assert ApprovalRequest.objects.count() == 1


def test_expiry_ends_the_request(api_as: Any, people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, destroy=1, expires_hours=2)
    key = new_key()
    request_id = _ask(api_as, people, key)
    with time_machine.travel(timezone.now() + dt.timedelta(hours=1)):
        assert services.expire_due() == 0
    with time_machine.travel(timezone.now() + dt.timedelta(hours=2, minutes=1)):
        assert services.expire_due() == 1
    assert ApprovalRequest.objects.get().state == "EXPIRED"
    assert approve(api_as(people.carol), request_id, expect=409)["code"] == "already_decided"
    assert Key.objects.get(pk=key.pk).state == "ACTIVE"
    assert Key.objects.get(pk=key.pk).pending_approval is None
    assert AuditEvent.objects.filter(operation="expire_approval", actor_iss="system").count() == 1


def test_an_approval_after_the_expiry_is_refused_even_before_the_sweep(
    api_as: Any, people: Any, keystore: Any, new_key: Any
) -> None:
    set_policy(keystore, destroy=1)
    request_id = _ask(api_as, people, new_key())
    with time_machine.travel(timezone.now() + dt.timedelta(hours=25)):
        assert approve(api_as(people.carol), request_id, expect=409)["code"] == "already_decided"
    assert ApprovalRequest.objects.get().state == "EXPIRED"


# --- the key is not what it was: FAILED, nothing done in KMS -----------------------------------


def _kms_key_count(aws_sandbox: str, keystore: Any) -> int:
    return len(kms_client(aws_sandbox, keystore).list_keys()["Keys"])


@pytest.mark.parametrize("slug", ["deactivate", "renew"])
def test_an_operation_the_key_state_no_longer_allows_ends_failed_with_the_409s_reason(
    api_as: Any, people: Any, keystore: Any, new_key: Any, aws_sandbox: str, slug: str
) -> None:
    set_policy(keystore, disable=1, change_material=1)
    key = new_key()
    request_id = _ask(api_as, people, key, slug)
    # Meanwhile carol schedules the key's deletion (no approval needed for that here).
    api_as(people.carol).post(f"/api/v1/keys/{key.pk}/schedule-deletion/", {"pending_window_days": 7}, expect=200)
    approve(api_as(people.alice), request_id)
    kms_before, keys_before = sandbox_view(aws_sandbox, key), _kms_key_count(aws_sandbox, keystore)

    request = services.execute(ApprovalRequest.objects.get().pk)

    assert request.state == "FAILED"
    assert request.result is not None
    assert (request.result["status"], request.result["code"]) == (409, "invalid_state")
    assert request.result["state"] == "PENDING_DELETION"
    assert sandbox_view(aws_sandbox, key) == kms_before
    assert _kms_key_count(aws_sandbox, keystore) == keys_before
    assert Key.objects.get(pk=key.pk).state == "PENDING_DELETION"
    failed = AuditEvent.objects.get(operation="execute_approval")
    assert (failed.outcome, failed.reason) == ("failed", "invalid_state")
    # The operation's own refusal, as the requester, names the request it ran for.
    refusal = AuditEvent.objects.get(operation=slug, outcome="refused")
    assert (refusal.actor_sub, refusal.details["approval"]["request"]) == ("bob", request_id)


@pytest.mark.parametrize("slug", ["schedule-deletion", "prepare-download"])
def test_a_requester_who_lost_the_role_meanwhile_gets_nothing_done(
    api_as: Any, people: Any, keystore: Any, new_key: Any, aws_sandbox: str, slug: str
) -> None:
    from tests.approvals.conftest import KEY_OPERATIONS

    set_policy(keystore, destroy=1, export=1)
    key = new_key()
    request_id = _ask(api_as, people, key, slug, KEY_OPERATIONS[slug]["body"])
    membership_remove(actor=people.actor(people.alice), keystore_id=keystore.pk, user=people.bob)
    approve(api_as(people.carol), request_id)
    kms_before = sandbox_view(aws_sandbox, key)

    request = services.execute(ApprovalRequest.objects.get().pk)

    assert request.state == "FAILED"
    assert request.result is not None
    assert request.result["code"] == "not_found"  # bob no longer sees the keystore
    assert sandbox_view(aws_sandbox, key) == kms_before
    key.refresh_from_db()
    assert (key.state, key.download_prepared) == ("ACTIVE", False)


# --- bypass attempts ---------------------------------------------------------------------------


def test_an_admin_bulk_action_asks_for_approval_per_key_and_runs_nothing(
    people: Any, keystore: Any, new_key: Any, aws_sandbox: str
) -> None:
    set_policy(keystore, destroy=1)
    keys = [new_key("one"), new_key("two")]
    kms_before = [sandbox_view(aws_sandbox, key) for key in keys]
    selected = {"action": "run_schedule_deletion", "_selected_action": [str(key.pk) for key in keys]}

    response = verified_client(people.root).post("/admin/keys/key/", selected)

    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(texts) == 2
    assert all("waits for approval" in text for text in texts), texts
    assert [Key.objects.get(pk=key.pk).state for key in keys] == ["ACTIVE", "ACTIVE"]
    assert [sandbox_view(aws_sandbox, key) for key in keys] == kms_before
    requests = ApprovalRequest.objects.filter(requested_by_sub="root")
    assert sorted(str(r.key_id) for r in requests) == sorted(str(key.pk) for key in keys)
    assert AuditEvent.objects.filter(operation="request_approval", actor_sub="root").count() == 2
    # And root cannot approve what root asked for.
    with pytest.raises(services.SelfApproval):
        services.approve(actor=people.actor(people.root), request_id=requests[0].pk)


def test_an_admin_soft_delete_of_a_keystore_waits_for_approval(people: Any, keystore: Any) -> None:
    set_policy(keystore, destroy=1)
    response = verified_client(people.root).post(
        "/admin/keystores/keystore/", {"action": "soft_delete", "_selected_action": [str(keystore.pk)]}
    )
    assert any("waits for approval" in str(m) for m in get_messages(response.wsgi_request))
    keystore.refresh_from_db()
    assert keystore.state == "ACTIVE"
    assert ApprovalRequest.objects.get().operation == "delete_keystore"


def test_an_admin_alone_cannot_lower_the_policy_through_the_page(people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1, destroy=2)
    form: dict[str, Any] = {name: 0 for name in ("destroy", "disable", "change_material", "export", "membership")}
    form |= {"approver_roles": ["admin", "custodian"], "expires_hours": 24}

    response = verified_client(people.alice).post(f"/approvals/policy/{keystore.pk}/", form)

    assert response.status_code == 302
    assert any("waits for approval" in str(m) for m in get_messages(response.wsgi_request))
    assert services.policy_of(keystore).destroy == 2
    request = ApprovalRequest.objects.get()
    assert (request.operation, request.requested_by_sub) == ("update_approval_policy", "alice")


def test_the_registry_dispatch_is_the_one_door_for_covered_key_operations(
    people: Any, keystore: Any, new_key: Any
) -> None:
    """What the pages, the API, admin actions and bulk jobs call: a service call through the registry waits too."""
    from byok_portal.dual_control import ApprovalPending

    set_policy(keystore, disable=1)
    key = new_key()
    with pytest.raises(ApprovalPending):
        REGISTRY[Operation.DEACTIVATE].run(people.actor(people.carol), key.pk)
    assert Key.objects.get(pk=key.pk).state == "ACTIVE"
