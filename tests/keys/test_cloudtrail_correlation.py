"""CloudTrail correlation (SPEC §14): every AssumeRole names the portal operation and who acts.

Checked where CloudTrail would see it: the sandbox's STS records each session it granted
(``GET /_sandbox/sts/sessions``), reached by the portal through boto3 over HTTP.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal import aws
from byok_portal.vocabulary import Operation
from keys import services
from keys.operations import REGISTRY
from keystores import services as keystore_services
from tests.keys.helpers import account_admin_iam

pytestmark = pytest.mark.django_db

AWS_NAME = r"^[\w+=,.@-]{2,64}$"


def sessions_of(sandbox_url: str, role_arn: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sandbox_url}/_sandbox/sts/sessions") as response:
        return [s for s in json.loads(response.read())["sessions"] if s["role_arn"] == role_arn]


def test_each_operation_and_identity_gets_its_own_named_session(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    REGISTRY[Operation.DEACTIVATE].run(bob, key.pk)
    REGISTRY[Operation.ACTIVATE].run(carol, key.pk)
    REGISTRY[Operation.DEACTIVATE].run(carol, key.pk)
    REGISTRY[Operation.ACTIVATE].run(carol, key.pk)  # carol's activate session again: cached

    seen = [(s["role_session_name"], s["source_identity"]) for s in sessions_of(aws_sandbox, keystore.role_arn)]
    assert seen == [
        ("byok-create", "local.bob"),
        ("byok-deactivate", "local.bob"),
        ("byok-activate", "local.carol"),
        ("byok-deactivate", "local.carol"),
    ]


def test_the_cache_never_hands_one_identitys_session_to_another(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    as_bob = aws.kms_for(keystore, operation=Operation.DEACTIVATE, acting=bob)
    as_carol = aws.kms_for(keystore, operation=Operation.DEACTIVATE, acting=carol)
    bob_again = aws.kms_for(keystore, operation=Operation.DEACTIVATE, acting=bob)

    def access_key(session: aws.KmsSession) -> str:
        client: Any = session.client  # the credentials boto3 signs with: private, but what AWS sees
        return str(client._request_signer._credentials.access_key)

    granted = {s["access_key_id"]: s["source_identity"] for s in sessions_of(aws_sandbox, keystore.role_arn)}
    assert granted[access_key(as_bob)] == "local.bob"
    assert granted[access_key(as_carol)] == "local.carol"
    assert access_key(bob_again) == access_key(as_bob)
    assert len(granted) == 2
    # The KMS calls are made with each person's own session.
    as_carol.probe()
    as_bob.probe()
    assert as_carol.request_ids
    assert as_bob.request_ids


def test_oidc_and_system_identities_are_named_as_cloudtrail_accepts_them(keystore: Any, aws_sandbox: str) -> None:
    person = Actor(iss="https://idp.example.com", sub="a1b2c3d4-0000-4000-8000-00000000beef", display_name="Ann")
    odd = Actor(iss="https://idp.example.com", sub="Ann Smith (ops)/é" * 8, display_name="Ann")
    job = Actor.system("reconcile")
    for actor in (person, odd, job):
        aws.kms_for(keystore, operation=Operation.RECONCILE, acting=actor).probe()

    names = [s["source_identity"] for s in sessions_of(aws_sandbox, keystore.role_arn)]
    assert names[0] == "a1b2c3d4-0000-4000-8000-00000000beef"
    assert names[1].startswith("Ann_Smith__ops___")
    assert len(names[1]) == 64
    assert names[2] == "byok-portal.reconcile"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("local.bob", "local.bob"),
        ("x", "x.2d711642"),
        ("", ".e3b0c442"),
        ("Ann Smith", "Ann_Smith.716955af"),
        ("aws:x", "aws_x.40c294ff"),
        ("a" * 65, "a" * 55 + ".635361c4"),
    ],
)
def test_aws_name_keeps_valid_names_and_makes_the_others_valid_and_distinct(text: str, expected: str) -> None:
    assert aws.aws_name(text) == expected
    assert re.match(AWS_NAME, expected, re.ASCII)


def test_aws_names_of_different_identities_differ() -> None:
    assert aws.aws_name("Ann Smith") != aws.aws_name("Ann_Smith")
    assert aws.aws_name("a" * 65) != aws.aws_name("a" * 66)


def test_audit_events_keep_the_kms_request_ids(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    REGISTRY[Operation.DEACTIVATE].run(bob, key.pk)

    event = AuditEvent.objects.filter(key_id=key.pk, operation="deactivate").get()
    # ListKeyRotations (which materials KMS holds) + DisableKey + DeleteImportedKeyMaterial: CloudTrail's requestIDs
    assert len(event.kms_request_ids) == 3


# --- the sandbox's STS, as AWS validates and authorises ------------------------------------


def sts_client(sandbox_url: str) -> Any:
    """boto3's STS without its client-side length checks, so that the server's own checks answer."""
    return boto3.client(
        "sts",
        endpoint_url=sandbox_url,
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(parameter_validation=False),
    )


@pytest.mark.parametrize(
    ("field", "value", "constraint"),
    [
        ("RoleSessionName", "has space", "regular expression pattern"),
        ("RoleSessionName", "x", "greater than or equal to 2"),
        ("RoleSessionName", "y" * 65, "less than or equal to 64"),
        ("SourceIdentity", "a:b", "regular expression pattern"),
        ("SourceIdentity", "z" * 65, "less than or equal to 64"),
    ],
)
def test_the_sandbox_refuses_names_aws_refuses(
    keystore: Any, aws_sandbox: str, field: str, value: str, constraint: str
) -> None:
    kwargs = {"RoleSessionName": "byok-ok", "SourceIdentity": "local.bob", field: value}
    with pytest.raises(ClientError) as excinfo:
        sts_client(aws_sandbox).assume_role(RoleArn=keystore.role_arn, ExternalId=keystore.external_id, **kwargs)
    assert excinfo.value.response["Error"]["Code"] == "ValidationError"
    assert constraint in excinfo.value.response["Error"]["Message"]


def test_a_trust_policy_without_set_source_identity_is_named_by_the_connection_test(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """A role made from the trust policy of before SPEC §14: AWS refuses SourceIdentity; the portal says why."""
    policy = keystore_services.iam_policies(keystore)["trust_policy"]
    assert policy["Statement"][0]["Action"] == ["sts:AssumeRole", "sts:SetSourceIdentity"]
    policy["Statement"][0]["Action"] = "sts:AssumeRole"
    iam = account_admin_iam(aws_sandbox, keystore.aws_account_id, keystore.region)
    iam.update_assume_role_policy(RoleName="byok-portal", PolicyDocument=json.dumps(policy))

    with pytest.raises(ClientError) as excinfo:
        sts_client(aws_sandbox).assume_role(
            RoleArn=keystore.role_arn, RoleSessionName="byok-x", ExternalId=keystore.external_id, SourceIdentity="bob"
        )
    tested = keystore_services.keystore_test_connection(actor=people.actor(people.bob), keystore_id=keystore.pk)

    assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
    assert "sts:SetSourceIdentity" in excinfo.value.response["Error"]["Message"]
    assert tested.last_check_ok is False
    assert tested.last_check_error.startswith("AssumeRole: SourceIdentityNotAllowed:")
