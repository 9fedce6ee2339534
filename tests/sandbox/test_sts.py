"""STS: only a role that exists can be assumed, and only as its trust policy (ExternalId) allows."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sandbox_aws.sts import ACCOUNT_ADMIN_ROLE

from .conftest import error_code, trust_policy


@pytest.fixture
def role_with_external_id(account_admin_iam: Any) -> str:
    """ARN of a role in the test's account whose trust policy requires ExternalId "ks-1234"."""
    role = account_admin_iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=trust_policy("ks-1234"))
    return str(role["Role"]["Arn"])


def test_a_role_that_was_never_created_cannot_be_assumed(sts: Any, account_id: str) -> None:
    role_arn = f"arn:aws:iam::{account_id}:role/byok-portal"

    with pytest.raises(ClientError) as excinfo:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="portal", ExternalId="ks-1234")

    assert error_code(excinfo) == "AccessDenied"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert f"sts:AssumeRole on resource: {role_arn}" in excinfo.value.response["Error"]["Message"]


def test_the_account_administrator_role_exists_in_every_account_and_creates_roles(
    assume_role: Callable[..., Any], account_id: str
) -> None:
    iam = assume_role(f"arn:aws:iam::{account_id}:role/{ACCOUNT_ADMIN_ROLE}", service="iam")

    role = iam.create_role(RoleName="app", Path="/byok/", AssumeRolePolicyDocument=trust_policy())["Role"]
    kms = assume_role(role["Arn"])

    assert role["Arn"] == f"arn:aws:iam::{account_id}:role/byok/app"
    assert kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["AWSAccountId"] == account_id


def test_a_trust_policy_that_allows_nothing_denies(sts: Any, account_admin_iam: Any) -> None:
    policy = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:TagSession"}]}
    )
    role_arn = account_admin_iam.create_role(RoleName="closed", AssumeRolePolicyDocument=policy)["Role"]["Arn"]

    with pytest.raises(ClientError) as excinfo:
        sts.assume_role(RoleArn=role_arn, RoleSessionName="portal")

    assert error_code(excinfo) == "AccessDenied"


def test_accounts_do_not_see_each_others_keys(assume_role: Callable[..., Any]) -> None:
    first = assume_role(f"arn:aws:iam::111111111111:role/{ACCOUNT_ADMIN_ROLE}")
    second = assume_role(f"arn:aws:iam::222222222222:role/{ACCOUNT_ADMIN_ROLE}")
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
