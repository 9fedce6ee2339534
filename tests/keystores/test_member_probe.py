"""The add-member form is no way to learn who has an account (issue 12 §11)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages

from audit.models import AuditEvent
from keystores.models import Membership, Role
from keystores.services import membership_grant
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def _attempt(client: Any, keystore: Any, name: str) -> tuple[int, list[str]]:
    response = client.post(f"/keystores/{keystore.pk}/members/", {"user": name, "role": "admin"})
    return response.status_code, [str(m) for m in get_messages(response.wsgi_request)]


def _grant_events(keystore: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(keystore_id=keystore.pk, operation="grant").order_by("seq"))


def test_a_member_without_the_admin_role_gets_one_answer_for_existing_and_unknown_names(
    people: Any, keystore: Any
) -> None:
    before = len(_grant_events(keystore))
    # bob is a custodian; a fresh browser each time, so each answer stands alone.
    existing = _attempt(verified_client(people.bob), keystore, "eve")
    existing_by_subject = _attempt(verified_client(people.bob), keystore, people.eve.oidc_subject)
    unknown = _attempt(verified_client(people.bob), keystore, "no-such-person")
    assert existing == existing_by_subject == unknown
    assert existing[1]
    assert "refused" in existing[1][-1]
    assert not Membership.objects.filter(user=people.eve).exists()

    probes = _grant_events(keystore)[before:]
    assert [(e.outcome, e.reason, e.actor_sub) for e in probes] == [("refused", "permission_denied", "bob")] * 3
    assert [e.details["user_reference"] for e in probes] == ["eve", people.eve.oidc_subject, "no-such-person"]


def test_the_role_is_checked_before_the_name_in_the_service(people: Any, keystore: Any) -> None:
    from byok_portal.errors import PermissionRefused

    for name in ("eve", "no-such-person"):
        with pytest.raises(PermissionRefused):
            membership_grant(actor=people.actor(people.dan), keystore_id=keystore.pk, reference=name, role=Role.ADMIN)


def test_an_admins_unknown_name_is_answered_and_audited(people: Any, keystore: Any) -> None:
    alice = verified_client(people.alice)
    status, texts = _attempt(alice, keystore, "no-such-person")
    assert status == 302
    assert texts[-1].startswith("Changing the members refused. No active user")
    event = _grant_events(keystore)[-1]
    assert (event.outcome, event.reason, event.details["user_reference"]) == (
        "refused",
        "unknown_user",
        "no-such-person",
    )

    status, texts = _attempt(verified_client(people.alice), keystore, "eve")
    assert texts[-1] == "eve is now admin of “Payments”."
    assert Membership.objects.get(user=people.eve).role == Role.ADMIN


def test_an_outsiders_attempt_is_a_404_and_audited(people: Any, keystore: Any) -> None:
    for name in ("eve", "no-such-person"):
        status, _ = _attempt(verified_client(people.eve), keystore, name)
        assert status == 404
    probes = _grant_events(keystore)[-2:]
    assert [(e.outcome, e.reason, e.actor_sub) for e in probes] == [("refused", "permission_denied", "eve")] * 2
    assert [e.details["user_reference"] for e in probes] == ["eve", "no-such-person"]
