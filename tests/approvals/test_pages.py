"""The dual-control pages: the inbox and its count, the request with its full content, decisions, the policy."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals.models import ApprovalRequest
from byok_portal.dual_control import ApprovalPending
from keystores.models import Membership
from tests.approvals.conftest import set_policy
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def _ask_on_the_page(people: Any, key: Any) -> ApprovalRequest:
    response = verified_client(people.bob).post(f"/keys/{key.pk}/deactivate/")
    assert response.status_code == 302
    return ApprovalRequest.objects.get(key=key)


def _html(client: Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.content.decode()


def test_the_key_page_shows_the_pending_request_and_the_inbox_counts_it(
    people: Any, keystore: Any, new_key: Any
) -> None:
    set_policy(keystore, disable=1)
    key = new_key()
    request = _ask_on_the_page(people, key)

    key_page = _html(verified_client(people.carol), f"/keys/{key.pk}/")
    assert "Waiting for approval" in key_page
    assert "bob</strong> asked to <strong>deactivate" in key_page
    assert "nobody yet" in key_page
    assert f"/approvals/{request.pk}/" in key_page
    # carol may approve: one in her count; bob asked, and dan (auditor) cannot approve: none in theirs.
    assert 'aria-label="1 waiting for you"' in _html(verified_client(people.carol), "/approvals/")
    assert 'waiting for you"' not in _html(verified_client(people.bob), "/approvals/")
    assert 'waiting for you"' not in _html(verified_client(people.dan), "/approvals/")


def test_deciding_on_the_request_page(people: Any, keystore: Any, new_key: Any) -> None:
    set_policy(keystore, disable=2)
    request = _ask_on_the_page(people, new_key())
    path = f"/approvals/{request.pk}/"

    # The requester sees no approve button, only the withdrawal; an auditor sees no decision at all.
    bob_page = _html(verified_client(people.bob), path)
    assert "Approve deactivate" not in bob_page
    assert "Withdraw the request" in bob_page
    assert "Your decision" not in _html(verified_client(people.dan), path)
    # bob posting an approval anyway is refused and told why.
    refused = verified_client(people.bob).post(f"{path}approve/", follow=True)
    assert "Approving refused. You asked for this operation" in refused.content.decode()

    carol = verified_client(people.carol)
    assert "Approve deactivate" in _html(carol, path)
    carol.post(f"{path}approve/")
    assert "You have approved this request." in _html(carol, path)
    verified_client(people.alice).post(f"{path}reject/", {"reason": "Not during the freeze."})

    request.refresh_from_db()
    assert (request.state, request.reason, request.approvals.count()) == ("REJECTED", "Not during the freeze.", 1)
    assert "Not during the freeze." in _html(carol, path)


def test_the_keystore_page_shows_the_policy_and_its_admins_change_it(people: Any, keystore: Any) -> None:
    assert "Approval policy" in _html(verified_client(people.bob), f"/keystores/{keystore.pk}/")
    assert "Change the approval policy" not in _html(verified_client(people.bob), f"/keystores/{keystore.pk}/")
    assert verified_client(people.bob).get(f"/approvals/policy/{keystore.pk}/").status_code == 403

    form: dict[str, Any] = {"destroy": 2, "disable": 1, "change_material": 1, "export": 1, "membership": 1}
    form |= {"approver_roles": ["admin", "custodian"], "expires_hours": 12}
    response = verified_client(people.alice).post(f"/approvals/policy/{keystore.pk}/", form)

    assert response.status_code == 302
    page = _html(verified_client(people.alice), f"/keystores/{keystore.pk}/")
    assert "Requests expire after 12 hours" in page
    bad = verified_client(people.alice).post(f"/approvals/policy/{keystore.pk}/", form | {"destroy": 9})
    assert bad.status_code == 400


def test_the_cli_asks_for_approval_under_a_membership_policy_as_the_person_named(people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1)
    out = StringIO()

    call_command("byok_grant", "eve", "custodian", "--keystore", str(keystore.pk), "--as", "alice", stdout=out)

    assert "Waits for approval" in out.getvalue()
    assert not Membership.objects.filter(keystore=keystore, user=people.eve).exists()
    request = ApprovalRequest.objects.get()
    assert (request.operation, request.requester, request.parameters["role"]) == (
        "grant",
        ("local", "alice"),
        "custodian",
    )


def test_the_approvals_list_costs_the_same_at_2_and_20_requests(people: Any, keystore: Any) -> None:
    from accounts.identity import Actor
    from approvals import services

    set_policy(keystore, membership=1)
    alice = people.actor(people.alice)

    def grow_to(total: int) -> None:
        while ApprovalRequest.objects.count() < total:
            with pytest.raises(ApprovalPending) as pending:
                services.policy_update(actor=alice, keystore_id=keystore.pk, values={"disable": 1})
            services.approve(actor=Actor.for_user(people.bob), request_id=pending.value.approval_request["id"])

    client = verified_client(people.carol)
    counts = []
    for total in (2, 20):
        grow_to(total)
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/approvals/").status_code == 200
            assert client.get("/approvals/").status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]


def test_preparing_a_download_on_its_page_under_a_policy_leads_back_to_the_key(
    people: Any, keystore: Any, make_key: Any
) -> None:
    from tests.keys.helpers import public_pem

    set_policy(keystore, export=1)
    key = make_key()
    response = verified_client(people.bob).post(
        f"/keys/{key.pk}/prepare-download/", {"public_key": public_pem()}, follow=True
    )
    assert response.redirect_chain == [(f"/keys/{key.pk}/", 302)]
    page = response.content.decode()
    assert "Preparing the download waits for approval." in page
    assert "asked to <strong>prepare_download" in page
    key.refresh_from_db()
    assert not key.download_prepared
