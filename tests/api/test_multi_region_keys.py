"""Multi-Region keys through the API (SPEC §11, §16): create with replica regions, add-replica, the key resource."""

from __future__ import annotations

from typing import Any

import pytest

from keystores.models import Role
from keystores.services import keystore_create, membership_set
from tests.conftest import REGION, create_sandbox_role
from tests.keys.helpers import sandbox_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def test_a_multi_region_key_is_created_shown_and_replicated_further_through_the_api(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)

    key = bob.post(
        URL,
        {"keystore": str(keystore.pk), "name": "dr", "multi_region": True, "replica_regions": ["us-east-1"]},
        expect=201,
    ).json()

    assert key["multi_region"] is True
    assert key["kms_key_arn"].split("/")[-1].startswith("mrk-")
    assert key["replicas"] == [
        {
            "region": "us-east-1",
            "kms_key_arn": key["kms_key_arn"].replace(f":{REGION}:", ":us-east-1:"),
            "kms_state": "ENABLED",
        }
    ]
    assert "add_replica" in key["allowed_operations"]
    url = f"{URL}{key['id']}/"

    grown = bob.post(f"{url}add-replica/", {"region": "ap-south-1"}, expect=200).json()

    assert [r["region"] for r in grown["replicas"]] == ["ap-south-1", "us-east-1"]
    assert bob.get(url, expect=200).json()["replicas"] == grown["replicas"]
    listed = bob.get(f"{URL}?multi_region=true", expect=200).json()["results"]
    assert [(k["id"], len(k["replicas"])) for k in listed] == [(key["id"], 2)]
    assert [k["id"] for k in bob.get(f"{URL}?region=ap-south-1", expect=200).json()["results"]] == [key["id"]]
    assert bob.get(f"{URL}?region=sa-east-1", expect=200).json()["results"] == []
    assert [k["id"] for k in bob.get(f"{URL}?multi_region=false", expect=200).json()["results"]] == []
    # Unknown text is refused, not read as "no filter" (which would list every key).
    assert bob.get(f"{URL}?multi_region=yes-please", expect=400).json() == {"multi_region": ["Enter true or false."]}


@pytest.mark.parametrize(
    ("regions", "reason"),
    [
        ([REGION], "own region"),
        (["cn-north-1"], "partition"),
        (["us-east-1", "us-east-1"], "twice"),
        (["not-a-region"], "partition"),
    ],
)
def test_replica_regions_are_checked_and_refused_with_the_field(
    api_as: Any, people: Any, keystore: Any, regions: list[str], reason: str
) -> None:
    body = {"keystore": str(keystore.pk), "name": "dr", "multi_region": True, "replica_regions": regions}

    refused = api_as(people.bob).post(URL, body, expect=400).json()

    assert reason in " ".join(refused["replica_regions"])


def test_replica_regions_need_a_multi_region_key(api_as: Any, people: Any, keystore: Any) -> None:
    body = {"keystore": str(keystore.pk), "name": "k", "replica_regions": ["us-east-1"]}

    refused = api_as(people.bob).post(URL, body, expect=400).json()

    assert "multi_region" in refused["replica_regions"][0]


def test_add_replica_is_refused_for_a_single_region_key_and_checks_its_region(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)
    single = bob.post(URL, {"keystore": str(keystore.pk), "name": "k"}, expect=201).json()
    assert "add_replica" not in single["allowed_operations"]
    assert single["multi_region"] is False
    assert single["replicas"] == []

    refused = bob.post(f"{URL}{single['id']}/add-replica/", {"region": "us-east-1"}, expect=409).json()

    assert refused["reason"] == "not_multi_region"
    multi = bob.post(
        URL,
        {"keystore": str(keystore.pk), "name": "dr", "multi_region": True, "replica_regions": ["us-east-1"]},
        expect=201,
    ).json()
    again = bob.post(f"{URL}{multi['id']}/add-replica/", {"region": "us-east-1"}, expect=400).json()
    assert "already has a replica in us-east-1" in again["region"][0]
    assert bob.post(f"{URL}{multi['id']}/add-replica/", {}, expect=400).json()["region"]


def test_add_replica_into_a_region_where_another_keystores_key_holds_the_alias_is_a_409_naming_both(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """Aliases are per AWS account and region: B (same account, home us-east-1) holds alias/orders there."""
    account = keystore.aws_account_id
    us = keystore_create(
        actor=people.actor(people.alice),
        name="US",
        aws_account_id=account,
        region="us-east-1",
        role_arn=f"arn:aws:iam::{account}:role/byok-portal-us",
    )
    membership_set(actor=people.actor(people.alice), keystore_id=us.pk, user=people.bob, role=Role.CUSTODIAN)
    create_sandbox_role(us)
    bob = api_as(people.bob)
    theirs = bob.post(URL, {"keystore": str(us.pk), "name": "us", "alias": "alias/orders"}, expect=201).json()
    body = {"keystore": str(keystore.pk), "name": "dr", "alias": "alias/orders", "multi_region": True}
    ours = bob.post(URL, {**body, "replica_regions": ["ap-south-1"]}, expect=201).json()

    refused = bob.post(f"{URL}{ours['id']}/add-replica/", {"region": "us-east-1"}, expect=409).json()

    assert (refused["code"], refused["alias"], refused["region"]) == ("alias_taken", "alias/orders", "us-east-1")
    assert "alias/orders is already used in us-east-1" in refused["detail"]
    assert [r["region"] for r in bob.get(f"{URL}{ours['id']}/", expect=200).json()["replicas"]] == ["ap-south-1"]
    kms = sandbox_client(aws_sandbox, "kms", us.role_arn, "us-east-1", ExternalId=us.external_id)
    aliases = {a["AliasName"]: a["TargetKeyId"] for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/orders"] == theirs["kms_key_arn"].rsplit("/", 1)[-1]
    bob.post(URL, {"keystore": str(us.pk), "name": "us2", "alias": "alias/us-only"}, expect=201)
    body = {**body, "alias": "alias/us-only", "replica_regions": ["us-east-1"]}
    created = bob.post(URL, body, expect=409).json()
    assert (created["code"], created["region"]) == ("alias_taken", "us-east-1")
