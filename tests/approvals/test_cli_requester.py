"""``byok_grant`` under an approval policy: the change is asked for by the person named with ``--as``,
who cannot approve it; without ``--as`` nobody in particular would be asking, so it is refused.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from approvals import services
from approvals.models import ApprovalRequest
from approvals.services import SelfApproval
from audit.models import AuditEvent
from keystores.models import Membership, Role
from tests.approvals.conftest import set_policy

pytestmark = pytest.mark.django_db


def grant(*args: str) -> str:
    out = StringIO()
    call_command("byok_grant", *args, stdout=out)
    return out.getvalue()


def test_without_a_named_person_a_covered_change_is_refused_and_nothing_is_asked(people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1)

    with pytest.raises(CommandError, match=r"only a named person may ask for it .*--as USER"):
        grant("eve", "custodian", "--keystore", str(keystore.pk))

    assert not ApprovalRequest.objects.exists()
    assert not Membership.objects.filter(keystore=keystore, user=people.eve).exists()
    refusal = AuditEvent.objects.get(operation="grant", outcome="refused")
    assert (refusal.actor_iss, refusal.actor_sub, refusal.reason) == ("system", "cli", "requester_unnamed")


def test_the_person_named_cannot_approve_their_own_request_and_someone_else_can(people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1)
    grant("eve", "custodian", "--keystore", str(keystore.pk), "--as", "alice")
    request = ApprovalRequest.objects.get()

    with pytest.raises(SelfApproval):
        services.approve(actor=people.actor(people.alice), request_id=request.pk)
    services.approve(actor=people.actor(people.bob), request_id=request.pk)
    services.execute(request.pk)

    assert Membership.objects.get(keystore=keystore, user=people.eve).role == Role.CUSTODIAN
    done = AuditEvent.objects.get(operation="grant", outcome="success", details__user="eve")
    assert (done.actor_sub, done.details["approval"]["approvers"][0]["sub"]) == ("alice", "bob")


def test_an_oidc_person_is_named_by_subject_and_counted_by_iss_and_sub(people: Any, keystore: Any) -> None:
    """Whatever account later carries the same (iss, sub), it is the same person: no self-approval."""
    from accounts.identity import Actor
    from accounts.models import User

    set_policy(keystore, membership=1)
    olga = User.objects.create_user(username="olga", oidc_issuer="https://idp.example", oidc_subject="u-olga-1")
    Membership.objects.create(keystore=keystore, user=olga, role=Role.ADMIN)

    grant("eve", "auditor", "--keystore", str(keystore.pk), "--as", "u-olga-1")
    request = ApprovalRequest.objects.get()

    assert request.requester == ("https://idp.example", "u-olga-1")
    # Her session's identity, through alice's admin account (as a second account of hers would be).
    same_person = Actor(iss="https://idp.example", sub="u-olga-1", display_name="Olga", user=people.alice)
    with pytest.raises(SelfApproval):
        services.approve(actor=same_person, request_id=request.pk)


def test_the_person_named_needs_the_admin_role(people: Any, keystore: Any) -> None:
    set_policy(keystore, membership=1)

    with pytest.raises(CommandError, match="admin role"):
        grant("eve", "custodian", "--keystore", str(keystore.pk), "--as", "dan")

    assert not ApprovalRequest.objects.exists()


def test_an_unknown_person_is_an_error(keystore: Any) -> None:
    with pytest.raises(CommandError, match="nobody-here"):
        grant("eve", "custodian", "--keystore", str(keystore.pk), "--as", "nobody-here")


def test_without_a_policy_the_operator_still_grants_alone(people: Any, keystore: Any) -> None:
    assert "granted" in grant("eve", "auditor", "--keystore", str(keystore.pk))

    assert Membership.objects.get(keystore=keystore, user=people.eve).role == Role.AUDITOR
    event = AuditEvent.objects.get(operation="grant", outcome="success", details__user="eve")
    assert (event.actor_iss, event.actor_sub) == ("system", "cli")
