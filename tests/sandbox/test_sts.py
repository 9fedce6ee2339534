"""STS: any role can be assumed, except that an existing role's ExternalId condition is enforced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import error_code


def trust_policy(external_id: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
                }
            ],
        }
    )


@pytest.fixture
def role_with_external_id(assume_role: Callable[..., Any], account_id: str) -> str:
    """ARN of a role in the test's account whose trust policy requires ExternalId "ks-1234"."""
    iam = assume_role(f"arn:aws:iam::{account_id}:role/setup", service="iam")
    role = iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=trust_policy("ks-1234"))
    return str(role["Role"]["Arn"])


def test_any_role_can_be_assumed_and_kms_calls_land_in_its_account(
    assume_role: Callable[..., Any], account_id: str
) -> None:
    kms = assume_role(f"arn:aws:iam::{account_id}:role/does-not-exist")

    metadata = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]

    assert metadata["AWSAccountId"] == account_id
    assert metadata["Arn"].startswith(f"arn:aws:kms:eu-central-1:{account_id}:key/")


def test_accounts_do_not_see_each_others_keys(assume_role: Callable[..., Any]) -> None:
    first = assume_role("arn:aws:iam::111111111111:role/byok-portal")
    second = assume_role("arn:aws:iam::222222222222:role/byok-portal")
    key_id = first.create_key()["KeyMetadata"]["KeyId"]

    with pytest.raises(ClientError) as excinfo:
        second.describe_key(KeyId=key_id)

    assert error_code(excinfo) == "NotFoundException"


@pytest.mark.parametrize("external_id", [None, "ks-9999"], ids=["missing", "wrong"])
def test_assume_role_without_the_required_external_id_is_denied(
    sts: Any, role_with_external_id: str, external_id: str | None
) -> None:
    kwargs = {"ExternalId": external_id} if external_id else {}

    with pytest.raises(ClientError) as excinfo:
        sts.assume_role(RoleArn=role_with_external_id, RoleSessionName="portal", **kwargs)

    assert error_code(excinfo) == "AccessDenied"


def test_assume_role_with_the_required_external_id_lands_in_the_roles_account(
    assume_role: Callable[..., Any], role_with_external_id: str, account_id: str
) -> None:
    kms = assume_role(role_with_external_id, ExternalId="ks-1234")

    assert kms.create_key()["KeyMetadata"]["AWSAccountId"] == account_id
