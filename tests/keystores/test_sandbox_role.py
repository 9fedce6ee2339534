"""Sandbox mode teaches the IAM setup: working values in the form, and a role that exists only once created."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from audit.models import AuditEvent
from byok_portal.aws import SANDBOX_ROLE_POLICY_NAME
from keystores import services
from keystores.models import Keystore, Role
from tests.conftest import new_account_id
from tests.keys.helpers import account_admin_iam
from tests.web import verified_client

pytestmark = pytest.mark.django_db

SANDBOX_ACCOUNT = "111122223333"


def field_value(html: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', html)
    return match[1] if match else ""


def selected_option(html: str, name: str) -> str:
    select = re.search(rf'<select[^>]*name="{name}".*?</select>', html, re.S)
    match = re.search(r'<option value="([^"]*)"[^>]*selected', select[0]) if select else None
    return match[1] if match else ""


def new_keystore(people: Any, role: str = "byok-portal", account: str = "") -> Keystore:
    """A keystore whose role nobody has created yet (in a fresh account: the sandbox outlives each test)."""
    account = account or new_account_id()
    store = services.keystore_create(
        actor=people.actor(people.alice),
        name="Sandboxed",
        aws_account_id=account,
        region="eu-west-1",
        role_arn=f"arn:aws:iam::{account}:role/{role}",
    )
    services.membership_set(
        actor=people.actor(people.alice), keystore_id=store.pk, user=people.bob, role=Role.CUSTODIAN
    )
    return store


def test_the_form_is_prefilled_with_values_that_work_in_the_sandbox(people: Any, aws_sandbox: str) -> None:
    browser = verified_client(people.alice)

    html = browser.get("/keystores/new/").content.decode()
    values = {
        "aws_account_id": field_value(html, "aws_account_id"),
        "region": selected_option(html, "region"),
        "role_arn": field_value(html, "role_arn"),
    }
    response = browser.post("/keystores/new/", {"name": "First", **values})

    assert values == {
        "aws_account_id": SANDBOX_ACCOUNT,
        "region": "eu-west-1",
        "role_arn": f"arn:aws:iam::{SANDBOX_ACCOUNT}:role/byok-portal",
    }
    assert 'id="sandbox-values"' in html
    assert response.status_code == 302
    # The next keystore is offered a role of its own: a trust policy pins one keystore's ExternalId.
    again = browser.get("/keystores/new/").content.decode()
    assert field_value(again, "role_arn") == f"arn:aws:iam::{SANDBOX_ACCOUNT}:role/byok-portal-2"


def test_outside_the_sandbox_nothing_is_prefilled_or_created(people: Any, aws_sandbox: str, settings: Any) -> None:
    keystore = new_keystore(people)
    settings.BYOK_SANDBOX = False
    browser = verified_client(people.alice)

    form = browser.get("/keystores/new/").content.decode()
    page = browser.get(f"/keystores/{keystore.pk}/").content.decode()
    created = browser.post(f"/keystores/{keystore.pk}/sandbox-role/")

    assert field_value(form, "aws_account_id") == ""
    assert "Create this role in the sandbox" not in page
    assert created.status_code == 404


def test_test_connection_fails_like_aws_until_the_role_is_created_then_succeeds(people: Any, aws_sandbox: str) -> None:
    keystore = new_keystore(people)
    browser = verified_client(people.alice)

    refused = browser.post(f"/keystores/{keystore.pk}/test-connection/", follow=True).content.decode()
    keystore.refresh_from_db()
    assert keystore.last_check_ok is False
    assert keystore.last_check_error.startswith(
        f"AssumeRole: AccessDenied: User: the caller is not authorized to perform: sts:AssumeRole on resource: "
        f"{keystore.role_arn}"
    )
    assert "Connection failed" in refused

    page = browser.get(f"/keystores/{keystore.pk}/").content.decode()
    assert "Create this role in the sandbox" in page
    created = browser.post(f"/keystores/{keystore.pk}/sandbox-role/", follow=True).content.decode()
    assert f"Role {keystore.role_arn} created in the sandbox" in created

    browser.post(f"/keystores/{keystore.pk}/test-connection/")
    keystore.refresh_from_db()
    assert (keystore.last_check_ok, keystore.last_check_error) == (True, "")
    outcomes = AuditEvent.objects.filter(keystore_id=keystore.pk, operation="test_connection").order_by("seq")
    assert [(e.outcome, e.reason) for e in outcomes] == [("failed", "AccessDenied"), ("success", "")]


def test_the_created_role_carries_exactly_the_policies_of_the_iam_guide(people: Any, aws_sandbox: str) -> None:
    keystore = new_keystore(people, role="teams/payments/byok")
    verified_client(people.alice).post(f"/keystores/{keystore.pk}/sandbox-role/")

    iam = account_admin_iam(aws_sandbox, keystore.aws_account_id, "eu-west-1")
    role = iam.get_role(RoleName="byok")["Role"]
    inline = iam.get_role_policy(RoleName="byok", PolicyName=SANDBOX_ROLE_POLICY_NAME)["PolicyDocument"]

    policies = services.iam_policies(keystore)
    assert role["Arn"] == keystore.role_arn
    assert role["AssumeRolePolicyDocument"] == policies["trust_policy"]
    assert (json.loads(inline) if isinstance(inline, str) else inline) == policies["permissions_policy"]


def test_a_role_whose_trust_policy_pins_another_external_id_is_refused(people: Any, aws_sandbox: str) -> None:
    first = new_keystore(people)
    second = new_keystore(people, account=first.aws_account_id)
    browser = verified_client(people.alice)
    browser.post(f"/keystores/{first.pk}/sandbox-role/")
    # The second keystore points at the first one's role: its trust policy names the first ExternalId.
    refused = services.keystore_test_connection(actor=people.actor(people.alice), keystore_id=second.pk)
    accepted = services.keystore_test_connection(actor=people.actor(people.alice), keystore_id=first.pk)

    assert refused.last_check_ok is False
    assert refused.last_check_error.startswith("AssumeRole: AccessDenied: ")
    assert accepted.last_check_ok is True


def test_only_keystore_admins_create_the_role(people: Any, aws_sandbox: str) -> None:
    keystore = new_keystore(people)
    custodian = verified_client(people.bob)

    page = custodian.get(f"/keystores/{keystore.pk}/").content.decode()
    response = custodian.post(f"/keystores/{keystore.pk}/sandbox-role/")

    assert "Create this role in the sandbox" not in page
    assert response.status_code == 403
    tested = services.keystore_test_connection(actor=people.actor(people.bob), keystore_id=keystore.pk)
    assert tested.last_check_ok is False


def test_a_role_that_does_not_require_the_external_id_fails_the_connection_test(people: Any, aws_sandbox: str) -> None:
    """AWS lets such a role be assumed by anyone trusted; the portal refuses to call that connected."""
    keystore = new_keystore(people)
    open_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"]}
        ],
    }
    iam = account_admin_iam(aws_sandbox, keystore.aws_account_id, "eu-west-1")
    iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=json.dumps(open_policy))

    refused = services.keystore_test_connection(actor=people.actor(people.alice), keystore_id=keystore.pk)
    verified_client(people.alice).post(f"/keystores/{keystore.pk}/sandbox-role/")
    accepted = services.keystore_test_connection(actor=people.actor(people.alice), keystore_id=keystore.pk)

    assert refused.last_check_ok is False
    assert refused.last_check_error.startswith(
        f"AssumeRole: ExternalIdNotRequired: the role {keystore.role_arn} can be assumed without the external ID"
    )
    assert accepted.last_check_ok is True
    reasons = AuditEvent.objects.filter(keystore_id=keystore.pk, operation="test_connection").order_by("seq")
    assert [e.reason for e in reasons] == ["ExternalIdNotRequired", ""]
