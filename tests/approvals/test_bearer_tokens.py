"""The requester's own ID token is the requester: approving through the API with it is refused (SPEC §3, §12).

People here are OIDC accounts provisioned by the real provider's tokens (``tests/oidc_provider``);
the portal counts them by the token's ``(iss, sub)``, whichever way they authenticate.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from keystores.models import Role
from keystores.services import membership_set
from tests.approvals.conftest import set_policy
from tests.oidc_provider.fixtures import OIDCProvider

pytestmark = [pytest.mark.oidc, pytest.mark.django_db(transaction=True)]


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_bearer_token_of_the_requester_cannot_approve(
    oidc_settings: OIDCProvider, people: Any, keystore: Any, new_key: Any
) -> None:
    ada_token = oidc_settings.mint({"sub": "sub-ada"})
    ada_api = _bearer(ada_token)
    assert ada_api.get("/api/v1/keys/").status_code == 200  # provisions her account, with no role yet
    ada = User.objects.get(oidc_issuer=oidc_settings.issuer, oidc_subject="sub-ada")
    membership_set(actor=people.actor(people.alice), keystore_id=keystore.pk, user=ada, role=Role.CUSTODIAN)
    set_policy(keystore, destroy=1)
    key = new_key()

    # She asks with her browser session (her account's own identity)...
    session = APIClient()
    session.force_login(ada)
    asked = session.post(f"/api/v1/keys/{key.pk}/schedule-deletion/", {}, format="json")
    assert asked.status_code == 202, asked.json()
    request_id = asked.json()["approval_request"]["id"]
    assert asked.json()["approval_request"]["requested_by"]["sub"] == "sub-ada"

    # ...and tries to approve with a token: the same (iss, sub), so the same person.
    refused = ada_api.post(f"/api/v1/approvals/{request_id}/approve/", {}, format="json")

    assert refused.status_code == 403, refused.json()
    assert refused.json()["code"] == "self_approval"
    event = AuditEvent.objects.get(operation="approve", outcome="refused")
    assert (event.actor_iss, event.actor_sub, event.reason) == (oidc_settings.issuer, "sub-ada", "self_approval")
    assert ApprovalRequest.objects.get().state == "PENDING"

    # A token of somebody else (made custodian) approves.
    grace_api = _bearer(oidc_settings.mint({"sub": "sub-grace"}))
    assert grace_api.get("/api/v1/keys/").status_code == 200
    grace = User.objects.get(oidc_subject="sub-grace")
    membership_set(actor=people.actor(people.alice), keystore_id=keystore.pk, user=grace, role=Role.CUSTODIAN)
    approved = grace_api.post(f"/api/v1/approvals/{request_id}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.json()
    assert approved.json()["state"] == "APPROVED"
