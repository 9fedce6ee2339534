"""Sandbox mode only: what the keystore pages add so that a newcomer learns the IAM setup without an AWS account.

The create form is prefilled with values that work in the sandbox, and the keystore page
offers to create the role there with the very policies it tells people to apply in AWS.
The sandbox's STS then behaves as AWS does: until the role exists with that trust
policy, "Test connection" fails with AWS's own ``AccessDenied``.
"""

from __future__ import annotations

import json

from django.conf import settings

from byok_portal import aws
from keystores.models import Keystore, KeystoreState
from keystores.services import iam_policies

# AWS's own documentation account; any 12 digits work in the sandbox.
ACCOUNT_ID = "111122223333"
REGION = "eu-west-1"
ROLE_NAME = "byok-portal"


def enabled() -> bool:
    return bool(settings.BYOK_SANDBOX)


def suggested_keystore() -> dict[str, str]:
    """Working values for a new keystore: the documentation account, and a role no active keystore uses yet.

    One role per keystore, because the trust policy pins one keystore's ExternalId.
    """
    taken = set(
        Keystore.objects.filter(aws_account_id=ACCOUNT_ID, state=KeystoreState.ACTIVE).values_list(
            "role_arn", flat=True
        )
    )
    number = 1
    while (role_arn := _role_arn(number)) in taken:
        number += 1
    return {"aws_account_id": ACCOUNT_ID, "region": REGION, "role_arn": role_arn}


def _role_arn(number: int) -> str:
    suffix = "" if number == 1 else f"-{number}"
    return f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}{suffix}"


def create_role(keystore: Keystore) -> None:
    """Create the keystore's role in the sandbox with the trust and permissions policies the page shows."""
    policies = iam_policies(keystore)
    aws.sandbox_create_role(
        role_arn=keystore.role_arn,
        region=keystore.region,
        trust_policy=json.dumps(policies["trust_policy"]),
        permissions_policy=json.dumps(policies["permissions_policy"]),
    )
