"""Every covered operation under policies of 0, 1 and 2 approvals: it runs only at quorum (SPEC §12).

Requests go through the API as a custodian (bob); approvals come from other people (carol, alice);
the approved operation is run by the Celery task's body (``approvals.services.execute``; a real worker
runs it in ``tests/tasks/test_approvals_worker.py``), against the sandbox AWS.
"""

from __future__ import annotations

from typing import Any

import pytest

from accounts.identity import Actor
from approvals import services
from approvals.models import ApprovalPolicy, ApprovalRequest
from audit.models import AuditEvent
from byok_portal.dual_control import ApprovalPending
from keys.models import Key
from keystores import services as keystore_services
from keystores.models import Keystore, Membership, Role
from tests.approvals.conftest import KEY_OPERATIONS, approve, set_policy
from tests.keys.helpers import sandbox_view

pytestmark = pytest.mark.django_db


def _key_fields(key_id: Any) -> dict[str, Any]:
    key = Key.objects.get(pk=key_id)
    return {"state": key.state, "download_prepared": key.download_prepared, "kms_state": key.kms_state}


@pytest.mark.parametrize("required", [0, 1, 2])
@pytest.mark.parametrize("slug", list(KEY_OPERATIONS))
def test_a_covered_key_operation_runs_only_at_quorum(
    api_as: Any, people: Any, keystore: Any, new_key: Any, aws_sandbox: str, slug: str, required: int
) -> None:
    spec = KEY_OPERATIONS[slug]
    set_policy(keystore, **{spec["group"]: required})
    key = new_key()
    bob = api_as(people.bob)
    before, kms_before = _key_fields(key.pk), sandbox_view(aws_sandbox, key)

    response = bob.post(f"/api/v1/keys/{key.pk}/{slug}/", spec["body"])

    if required == 0:
        assert response.status_code in (200, 201), response.json()
        assert not ApprovalRequest.objects.exists()
        assert {name: _key_fields(key.pk)[name] for name in spec["after"]} == spec["after"]
        return
    assert response.status_code == 202, response.json()
    request = response.json()["approval_request"]
    assert (request["state"], request["required"], request["approvals"]) == ("PENDING", required, [])
    assert request["operation"] == slug.replace("-", "_")
    assert request["key"] == str(key.pk)
    assert request["requested_by"] == {"iss": "local", "sub": "bob", "name": "bob", "active": True}
    assert bob.get(f"/api/v1/keys/{key.pk}/", expect=200).json()["pending_approval"] == request["id"]
    assert _key_fields(key.pk) == before
    assert sandbox_view(aws_sandbox, key) == kms_before

    approvers = [people.carol, people.alice][:required]
    for count, approver in enumerate(approvers, start=1):
        body = approve(api_as(approver), request["id"])
        assert len(body["approvals"]) == count
        assert body["state"] == ("APPROVED" if count == required else "PENDING")
        services.execute(ApprovalRequest.objects.get().pk)  # a task delivered early does nothing
        if count < required:
            assert _key_fields(key.pk) == before
            assert sandbox_view(aws_sandbox, key) == kms_before

    done = bob.get(f"/api/v1/approvals/{request['id']}/", expect=200).json()
    assert done["state"] == "EXECUTED", done
    assert {name: _key_fields(key.pk)[name] for name in spec["after"]} == spec["after"]
    assert bob.get(f"/api/v1/keys/{key.pk}/", expect=200).json()["pending_approval"] is None
    # The operation ran as bob, and its audit event names the request and its approvers.
    event = AuditEvent.objects.filter(key_id=key.pk, operation=request["operation"], outcome="success").get()
    assert (event.actor_iss, event.actor_sub) == ("local", "bob")
    assert event.details["approval"]["request"] == request["id"]
    assert [a["sub"] for a in event.details["approval"]["approvers"]] == [a.username for a in approvers]


def _membership_attempts(people: Any, keystore: Any) -> dict[str, Any]:
    """The keystore-level covered operations, as alice (admin) asks for them, and how to tell they happened."""
    alice = people.actor(people.alice)

    def grant() -> Any:
        return keystore_services.membership_set(
            actor=alice, keystore_id=keystore.pk, user=people.eve, role=Role.CUSTODIAN
        )

    def revoke() -> Any:
        return keystore_services.membership_remove(actor=alice, keystore_id=keystore.pk, user=people.dan)

    def policy() -> Any:
        return services.policy_update(actor=alice, keystore_id=keystore.pk, values={"disable": 3, "membership": 1})

    def delete() -> Any:
        return keystore_services.keystore_delete(actor=alice, keystore_id=keystore.pk)

    return {
        "grant": (grant, lambda: Membership.objects.filter(keystore=keystore, user=people.eve).exists()),
        "revoke": (revoke, lambda: not Membership.objects.filter(keystore=keystore, user=people.dan).exists()),
        "update_approval_policy": (policy, lambda: ApprovalPolicy.objects.get(keystore=keystore).disable == 3),
        "delete_keystore": (delete, lambda: Keystore.objects.get(pk=keystore.pk).state == "DELETED"),
    }


@pytest.mark.parametrize("required", [0, 1, 2])
@pytest.mark.parametrize("operation", ["grant", "revoke", "update_approval_policy", "delete_keystore"])
def test_a_covered_keystore_operation_runs_only_at_quorum(
    api_as: Any, people: Any, keystore: Any, operation: str, required: int
) -> None:
    group = "destroy" if operation == "delete_keystore" else "membership"
    set_policy(keystore, **{group: required})
    attempt, happened = _membership_attempts(people, keystore)[operation]
    if required == 0:
        attempt()
        assert happened()
        assert not ApprovalRequest.objects.exists()
        return
    with pytest.raises(ApprovalPending) as pending:
        attempt()
    request_id = pending.value.approval_request["id"]
    assert not happened()
    for count, approver in enumerate([people.bob, people.carol][:required], start=1):
        assert approve(api_as(approver), request_id)["state"] == ("APPROVED" if count == required else "PENDING")
        services.execute(ApprovalRequest.objects.get().pk)
        assert happened() == (count == required)
    assert ApprovalRequest.objects.get().state == "EXECUTED"
    event = AuditEvent.objects.filter(operation=operation, outcome="success").order_by("-seq").first()
    assert event is not None
    assert event.details["approval"]["request"] == request_id


def test_the_api_answers_a_covered_policy_change_with_202_and_changes_nothing(
    api_as: Any, people: Any, keystore: Any
) -> None:
    set_policy(keystore, membership=1, destroy=2)
    alice = api_as(people.alice)
    body = {
        "destroy": 0,
        "disable": 0,
        "change_material": 0,
        "export": 0,
        "membership": 0,
        "approver_roles": ["admin", "custodian"],
        "expires_hours": 24,
    }
    url = f"/api/v1/keystores/{keystore.pk}/approval-policy/"
    request = alice.call("PUT", url, body, expect=202).json()["approval_request"]
    assert request["operation"] == "update_approval_policy"
    assert request["group"] == "membership"
    # An admin alone cannot lower it: it stays as it was until someone else approves.
    assert alice.get(url, expect=200).json()["destroy"] == 2
    assert AuditEvent.objects.filter(operation="request_approval", actor_sub="alice").count() == 1
    approve(api_as(people.bob), request["id"])
    services.execute(ApprovalRequest.objects.get().pk)
    assert alice.get(url, expect=200).json() == body


def test_a_policy_put_is_validated_before_anyone_is_asked(api_as: Any, people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1)
    url = f"/api/v1/keystores/{keystore.pk}/approval-policy/"
    bad: dict[str, Any] = {"destroy": 6, "disable": 0, "change_material": 0, "export": 0, "membership": 0}
    bad |= {"approver_roles": ["owner"], "expires_hours": 0}
    errors = api_as(people.alice).call("PUT", url, bad, expect=400).json()
    assert set(errors) == {"destroy", "approver_roles", "expires_hours"}
    assert not ApprovalRequest.objects.exists()


def test_only_admins_change_the_policy_and_the_refusal_is_audited(api_as: Any, people: Any, keystore: Any) -> None:
    url = f"/api/v1/keystores/{keystore.pk}/approval-policy/"
    body: dict[str, Any] = {"destroy": 0, "disable": 0, "change_material": 0, "export": 0, "membership": 0}
    body |= {"approver_roles": ["admin"], "expires_hours": 1}
    assert api_as(people.bob).call("PUT", url, body, expect=403).json()["code"] == "permission_denied"
    assert AuditEvent.objects.filter(operation="update_approval_policy", outcome="refused", actor_sub="bob").exists()
    assert Actor.for_user(people.bob).identity == ("local", "bob")


def test_the_api_answers_a_covered_keystore_deletion_with_202(api_as: Any, people: Any, keystore: Any) -> None:
    set_policy(keystore, destroy=1)
    alice = api_as(people.alice)

    request = alice.delete(f"/api/v1/keystores/{keystore.pk}/", expect=202).json()["approval_request"]

    assert (request["operation"], request["key"], request["required"]) == ("delete_keystore", None, 1)
    assert alice.get(f"/api/v1/keystores/{keystore.pk}/", expect=200).json()["state"] == "ACTIVE"
    listed = alice.get(f"/api/v1/approvals/?keystore={keystore.pk}&state=PENDING", expect=200).json()["results"]
    assert [r["id"] for r in listed] == [request["id"]]
