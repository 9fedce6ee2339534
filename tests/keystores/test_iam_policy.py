"""The generated least-privilege permissions policy, evaluated request by request (issue 12, item 15).

The sandbox cannot judge this policy: moto's IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``)
ignores the Resource element and has no KMS condition keys (``moto/iam/access_control.py``:
"TODO add support for the Resource and Condition parts of IAM policies"), so every request
would be allowed or refused for reasons unrelated to the policy. Instead, each request the
portal makes, and each one the role must not be able to make, is evaluated against the
generated document with IAM's documented evaluation rules for exactly the operators the
policy uses (an unknown operator fails the test rather than being guessed):

- an explicit Deny overrides any Allow; with no Allow the request is refused
  (IAM User Guide, reference_policies_evaluation-logic.html);
- Action and Resource match with ``*``/``?`` wildcards; an action that is not authorized
  against a particular resource (CreateKey, and tagging during CreateKey) has Resource ``*``
  (KMS Developer Guide, iam-policies.html and tag-permissions.html);
- ``StringEquals``/``StringLike`` are false when the key is absent; ``Null: "true"`` means
  absent; ``ForAnyValue`` is false on an absent key and ``ForAllValues`` true
  (reference_policies_condition-single-vs-multi-valued-context-keys.html);
- ``aws:ResourceTag`` exists only for operations on an existing key (tag-authorization.html).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from keystores import services
from tests.conftest import REGION
from tests.web import verified_client

pytestmark = pytest.mark.django_db

AWS_MODULE = Path(__file__).resolve().parents[2] / "byok_portal" / "aws.py"


@dataclass
class Request:
    """One authorization request: an IAM action on a resource, with its request context."""

    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)


def _values(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    present = key in context
    actual = _values(context[key]) if present else []
    wanted = _values(expected)
    if operator == "Null":
        return (not present) if wanted == ["true"] else present
    if operator == "StringEquals":
        return present and any(a == w for a in actual for w in wanted)
    if operator == "StringLike":
        return present and any(fnmatchcase(a, w) for a in actual for w in wanted)
    if operator == "ForAnyValue:StringEquals":
        return any(a == w for a in actual for w in wanted)
    if operator == "ForAllValues:StringNotEquals":
        return all(a not in wanted for a in actual)
    raise AssertionError(f"the evaluator does not know the condition operator {operator!r}")


def _matches(patterns: Any, value: str, *, case_sensitive: bool) -> bool:
    if case_sensitive:
        return any(fnmatchcase(value, p) for p in _values(patterns))
    return any(fnmatchcase(value.lower(), p.lower()) for p in _values(patterns))


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    """IAM's decision for one request under one identity policy."""
    decision = False
    for statement in policy["Statement"]:
        if not _matches(statement["Action"], request.action, case_sensitive=False):
            continue
        if not _matches(statement["Resource"], request.resource, case_sensitive=True):
            continue
        conditions = statement.get("Condition", {})
        if not all(
            _condition_holds(operator, key, expected, request.context)
            for operator, pairs in conditions.items()
            for key, expected in pairs.items()
        ):
            continue
        if statement["Effect"] == "Deny":
            return False
        decision = True
    return decision


def all_allowed(policy: Mapping[str, Any], requests: Iterable[Request]) -> bool:
    return all(allowed(policy, r) for r in requests)


@pytest.fixture
def policy(keystore: Any) -> dict[str, Any]:
    permissions: dict[str, Any] = services.iam_policies(keystore)["permissions_policy"]
    return permissions


@pytest.fixture
def arns(keystore: Any) -> dict[str, str]:
    base = f"arn:aws:kms:{REGION}:{keystore.aws_account_id}"
    return {
        "portal_key": f"{base}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "customer_key": f"{base}:key/0000feed-12ab-34cd-56ef-1234567890ab",
        "portal_alias": f"{base}:alias/orders",
    }


def portal_calls(tag: str, arns: Mapping[str, str]) -> dict[str, list[Request]]:
    """Every KMS operation byok_portal/aws.py makes, as the IAM requests AWS authorizes for it."""
    portal_key = {f"aws:ResourceTag/{tag}": "7d9c3c52-portal-key-id", "kms:KeyOrigin": "EXTERNAL"}
    on_key = {"KeyId": arns["portal_key"]}

    def key(action: str, **extra: Any) -> Request:
        return Request(f"kms:{action}", on_key["KeyId"], {**portal_key, **extra})

    def alias(action: str) -> list[Request]:
        # Alias operations are authorized on the alias and on the key it points to.
        return [Request(f"kms:{action}", arns["portal_alias"]), key(action)]

    creation_tags = {tag: "7d9c3c52-portal-key-id", "app": "shop"}
    creation = {
        "kms:KeyOrigin": "EXTERNAL",
        "aws:TagKeys": list(creation_tags),
        **{f"aws:RequestTag/{k}": v for k, v in creation_tags.items()},
    }
    return {
        # CreateKey with Tags is authorized as kms:CreateKey and kms:TagResource, on no particular key.
        "CreateKey": [Request("kms:CreateKey", "*", creation), Request("kms:TagResource", "*", creation)],
        "DescribeKey": [key("DescribeKey")],
        "GetParametersForImport": [key("GetParametersForImport")],
        "ImportKeyMaterial": [key("ImportKeyMaterial")],
        "DeleteImportedKeyMaterial": [key("DeleteImportedKeyMaterial")],
        "EnableKey": [key("EnableKey")],
        "DisableKey": [key("DisableKey")],
        "ScheduleKeyDeletion": [key("ScheduleKeyDeletion")],
        "CancelKeyDeletion": [key("CancelKeyDeletion")],
        "ListResourceTags": [key("ListResourceTags")],
        # Reconciliation compares an RSA or EC key's public key with the portal's (issue 14).
        "GetPublicKey": [key("GetPublicKey")],
        # Material versions and rotation (issue 15).
        "ListKeyRotations": [key("ListKeyRotations")],
        "RotateKeyOnDemand": [key("RotateKeyOnDemand")],
        # Editing a key's own tags (never the portal's tag).
        "TagResource": [key("TagResource", **{"aws:TagKeys": ["app"], "aws:RequestTag/app": "billing"})],
        "UntagResource": [key("UntagResource", **{"aws:TagKeys": ["app"]})],
        "CreateAlias": alias("CreateAlias"),
        "UpdateAlias": alias("UpdateAlias"),
        "DeleteAlias": alias("DeleteAlias"),
        "ListAliases": [Request("kms:ListAliases", "*")],
        "ListKeys": [Request("kms:ListKeys", "*")],
        # A multi-Region key's replica (SPEC §11): ReplicateKey on the primary, CreateKey and tagging in the
        # replica's region (on no particular key, like CreateKey).
        "ReplicateKey": [
            key("ReplicateKey", **{"kms:ReplicaRegion": REPLICA_REGION}),
            Request("kms:CreateKey", "*", creation),
            Request("kms:TagResource", "*", creation),
        ],
    }


REPLICA_REGION = "us-east-1"


@pytest.fixture
def regional_policy(keystore: Any) -> dict[str, Any]:
    """The policy of a keystore whose multi-Region keys have replicas in REPLICA_REGION."""
    permissions: dict[str, Any] = services.iam_policies(keystore, [REPLICA_REGION])["permissions_policy"]
    return permissions


def test_replicas_are_allowed_only_to_their_regions_and_managed_there_only_when_the_portals(
    regional_policy: dict[str, Any], policy: dict[str, Any], arns: dict[str, str], settings: Any
) -> None:
    calls = portal_calls(settings.BYOK_TAG_KEY, arns)
    assert all(all_allowed(regional_policy, requests) for requests in calls.values())
    portal_key = {f"aws:ResourceTag/{settings.BYOK_TAG_KEY}": "id", "kms:KeyOrigin": "EXTERNAL"}
    replicate = Request("kms:ReplicateKey", arns["portal_key"], {**portal_key, "kms:ReplicaRegion": "ap-south-1"})
    assert not allowed(regional_policy, replicate)  # a region the keystore does not use
    replicate.context["kms:ReplicaRegion"] = REPLICA_REGION
    assert not allowed(policy, replicate)  # a keystore without multi-Region keys replicates nothing
    replica_arn = arns["portal_key"].replace(f":{REGION}:", f":{REPLICA_REGION}:")
    for action in ("ImportKeyMaterial", "ScheduleKeyDeletion", "DisableKey"):
        assert allowed(regional_policy, Request(f"kms:{action}", replica_arn, portal_key)), action
        customer_replica = Request(f"kms:{action}", replica_arn, {"kms:KeyOrigin": "EXTERNAL"})
        assert not allowed(regional_policy, customer_replica), action
        elsewhere = arns["portal_key"].replace(f":{REGION}:", ":ap-south-1:")
        assert not allowed(regional_policy, Request(f"kms:{action}", elsewhere, portal_key)), action


def test_every_call_the_portal_makes_is_allowed(policy: dict[str, Any], arns: dict[str, str], settings: Any) -> None:
    calls = portal_calls(settings.BYOK_TAG_KEY, arns)
    made = set(re.findall(r'_call\(\s*"(\w+)"', AWS_MODULE.read_text()))
    assert made == set(calls), f"update portal_calls for: {sorted(made ^ set(calls))}"
    refused = [name for name, requests in calls.items() if not all_allowed(policy, requests)]
    assert refused == ["ReplicateKey"]  # only once the keystore has multi-Region keys (see below)


def test_the_role_cannot_adopt_an_existing_customer_key_by_tagging_it(
    policy: dict[str, Any], arns: dict[str, str], settings: Any
) -> None:
    tag = settings.BYOK_TAG_KEY
    customer_external_key = {"kms:KeyOrigin": "EXTERNAL", "aws:ResourceTag/owner": "payments-team"}
    adopt = Request(
        "kms:TagResource",
        arns["customer_key"],
        {**customer_external_key, "aws:TagKeys": [tag], f"aws:RequestTag/{tag}": "anything"},
    )
    assert not allowed(policy, adopt)
    # Hidden among other tags, it is refused just the same.
    adopt.context["aws:TagKeys"] = ["cost-center", tag]
    assert not allowed(policy, adopt)


def test_the_role_cannot_touch_keys_without_the_portal_tag(
    policy: dict[str, Any], arns: dict[str, str], settings: Any
) -> None:
    customer = {"kms:KeyOrigin": "EXTERNAL"}
    for action in ("ScheduleKeyDeletion", "DeleteImportedKeyMaterial", "DisableKey", "ImportKeyMaterial"):
        assert not allowed(policy, Request(f"kms:{action}", arns["customer_key"], customer)), action
    other_tags = {**customer, "aws:TagKeys": ["app"], "aws:RequestTag/app": "x"}
    assert not allowed(policy, Request("kms:TagResource", arns["customer_key"], other_tags))
    assert not allowed(policy, Request("kms:CreateAlias", arns["customer_key"], customer))


def test_the_role_cannot_remove_the_portal_tag_or_create_other_keys(
    policy: dict[str, Any], arns: dict[str, str], settings: Any
) -> None:
    tag = settings.BYOK_TAG_KEY
    portal_key = {f"aws:ResourceTag/{tag}": "id", "kms:KeyOrigin": "EXTERNAL"}
    untag = Request("kms:UntagResource", arns["portal_key"], {**portal_key, "aws:TagKeys": [tag]})
    assert not allowed(policy, untag)
    for origin in ("AWS_KMS", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"):
        create = {"kms:KeyOrigin": origin, "aws:TagKeys": [tag], f"aws:RequestTag/{tag}": "id"}
        assert not allowed(policy, Request("kms:CreateKey", "*", create)), origin
    untagged = {"kms:KeyOrigin": "EXTERNAL"}
    assert not allowed(policy, Request("kms:CreateKey", "*", untagged))
    for action in ("kms:Decrypt", "kms:Encrypt", "kms:PutKeyPolicy", "kms:CreateGrant", "kms:ReplicateKey"):
        assert not allowed(policy, Request(action, arns["portal_key"], portal_key)), action


def test_the_iam_guide_says_what_the_role_can_and_cannot_do(keystore: Any, people: Any) -> None:
    html = verified_client(people.alice).get(f"/keystores/{keystore.pk}/").content.decode()
    page = " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())  # the text a reader sees
    assert "The role can: create KMS keys only with Origin=EXTERNAL" in page
    assert (
        "The role cannot: add the portal's tag to a key that does not already carry it (so it can never take over "
        "one of your existing keys), remove that tag, touch any key without it" in page
    )
    assert '"Sid": "NeverAdoptAnExistingKey"' in page
