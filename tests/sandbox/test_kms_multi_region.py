"""Multi-Region keys with imported material, as AWS documents them (sandbox_aws.kms_regions), over boto3."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from botocore.exceptions import ClientError

from sandbox_aws import state

from .conftest import REGION, error_code, trust_policy, wrap_material

REPLICA_REGIONS = ("eu-west-1", "us-east-1")


@pytest.fixture
def regional(assume_role: Callable[..., Any], account_admin_iam: Any) -> Callable[[str], Any]:
    """``regional(region)`` → a KMS client of the portal's role in the test's account, in ``region``."""
    role_arn = account_admin_iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=trust_policy())["Role"][
        "Arn"
    ]
    clients: dict[str, Any] = {}

    def client(region: str) -> Any:
        if region not in clients:
            clients[region] = assume_role(role_arn, region=region)
        return clients[region]

    return client


def import_into(kms: Any, key_id: str, material: bytes) -> Any:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap_material(params["PublicKey"], material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def wait_created(kms: Any, key_id: str) -> dict[str, Any]:
    """What AWS tells callers to do after ReplicateKey: DescribeKey until the replica is no longer Creating."""
    deadline = time.monotonic() + 10
    while True:
        metadata = dict(kms.describe_key(KeyId=key_id)["KeyMetadata"])
        if metadata["KeyState"] != "Creating" or time.monotonic() > deadline:
            return metadata
        time.sleep(0.05)


def new_primary(kms: Any) -> str:
    return str(kms.create_key(Origin="EXTERNAL", MultiRegion=True)["KeyMetadata"]["KeyId"])


def replicate(regional: Callable[[str], Any], key_id: str, *regions: str) -> None:
    for region in regions:
        regional(REGION).replicate_key(KeyId=key_id, ReplicaRegion=region)
        wait_created(regional(region), key_id)


def test_a_multi_region_external_key_gets_an_mrk_id_and_reports_itself_primary(
    regional: Callable[[str], Any],
) -> None:
    metadata = regional(REGION).create_key(Origin="EXTERNAL", MultiRegion=True)["KeyMetadata"]

    assert re.fullmatch(r"mrk-[0-9a-f]{32}", metadata["KeyId"])
    assert metadata["KeyState"] == "PendingImport"
    assert metadata["MultiRegion"] is True
    described = regional(REGION).describe_key(KeyId=metadata["KeyId"])["KeyMetadata"]
    assert described["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY",
        "PrimaryKey": {"Arn": metadata["Arn"], "Region": REGION},
        "ReplicaKeys": [],
    }
    single = regional(REGION).create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert not single["KeyId"].startswith("mrk-")
    assert single["MultiRegion"] is False
    assert "MultiRegionConfiguration" not in single


def test_replicate_key_makes_a_replica_without_material_that_is_creating_then_pending_import(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    import_into(regional(REGION), key_id, os.urandom(32))

    answer = regional(REGION).replicate_key(
        KeyId=key_id, ReplicaRegion="us-east-1", Tags=[{"TagKey": "team", "TagValue": "payments"}]
    )

    replica = answer["ReplicaKeyMetadata"]
    assert replica["KeyId"] == key_id
    assert replica["Arn"] == replica["Arn"].replace(REGION, "us-east-1")
    assert ":us-east-1:" in replica["Arn"]
    assert replica["KeyState"] == "Creating"
    assert answer["ReplicaTags"] == [{"TagKey": "team", "TagValue": "payments"}]
    replica_kms = regional("us-east-1")
    with pytest.raises(ClientError) as refused:  # AWS: retry on KMSInvalidStateException while Creating
        replica_kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
    assert error_code(refused) == "KMSInvalidStateException"
    assert wait_created(replica_kms, key_id)["KeyState"] == "PendingImport"
    assert replica_kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]
    assert regional(REGION).list_resource_tags(KeyId=key_id)["Tags"] == []
    primary_arn = regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    expected = {
        "PrimaryKey": {"Arn": primary_arn, "Region": REGION},
        "ReplicaKeys": [{"Arn": replica["Arn"], "Region": "us-east-1"}],
    }
    assert replica_kms.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA",
        **expected,
    }
    assert regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY",
        **expected,
    }


def test_data_encrypted_in_one_region_decrypts_in_every_other_once_each_holds_the_same_material(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, *REPLICA_REGIONS)
    material = os.urandom(32)
    for region in (REGION, *REPLICA_REGIONS):
        import_into(regional(region), key_id, material)

    ciphertext = regional("us-east-1").encrypt(KeyId=key_id, Plaintext=b"wire transfer 42")["CiphertextBlob"]

    for region in (REGION, "eu-west-1"):
        assert regional(region).decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"wire transfer 42"


def test_a_replica_refuses_material_other_than_its_primarys_even_before_it_had_any(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    import_into(regional(REGION), key_id, os.urandom(32))
    replicate(regional, key_id, "us-east-1")

    with pytest.raises(ClientError) as refused:
        import_into(regional("us-east-1"), key_id, os.urandom(32))

    assert error_code(refused) == "IncorrectKeyMaterialException"
    assert regional("us-east-1").describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_material_deleted_in_one_replica_leaves_the_others_working(regional: Callable[[str], Any]) -> None:
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, *REPLICA_REGIONS)
    material = os.urandom(32)
    for region in (REGION, *REPLICA_REGIONS):
        import_into(regional(region), key_id, material)

    regional("eu-west-1").delete_imported_key_material(KeyId=key_id)

    assert regional("eu-west-1").describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    assert regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert regional("us-east-1").describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    import_into(regional("eu-west-1"), key_id, material)
    assert regional("eu-west-1").describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_a_second_replica_in_one_region_is_refused_even_while_the_first_is_pending_deletion(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, "us-east-1")

    with pytest.raises(ClientError) as twice:
        regional(REGION).replicate_key(KeyId=key_id, ReplicaRegion="us-east-1")
    assert error_code(twice) == "AlreadyExistsException"
    regional("us-east-1").schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(ClientError) as pending:
        regional(REGION).replicate_key(KeyId=key_id, ReplicaRegion="us-east-1")
    assert error_code(pending) == "AlreadyExistsException"


@pytest.mark.parametrize(
    ("replica_region", "code"),
    [(REGION, "ValidationException"), ("cn-north-1", "ValidationException"), ("mars-east-1", "ValidationException")],
)
def test_replicas_go_to_another_region_of_the_same_partition(
    regional: Callable[[str], Any], replica_region: str, code: str
) -> None:
    key_id = new_primary(regional(REGION))

    with pytest.raises(ClientError) as refused:
        regional(REGION).replicate_key(KeyId=key_id, ReplicaRegion=replica_region)

    assert error_code(refused) == code


def test_only_a_multi_region_primary_can_be_replicated(regional: Callable[[str], Any]) -> None:
    single = regional(REGION).create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, "us-east-1")

    with pytest.raises(ClientError) as not_multi_region:
        regional(REGION).replicate_key(KeyId=single, ReplicaRegion="us-east-1")
    with pytest.raises(ClientError) as from_replica:
        regional("us-east-1").replicate_key(KeyId=key_id, ReplicaRegion="eu-west-1")

    assert error_code(not_multi_region) == "UnsupportedOperationException"
    assert error_code(from_replica) == "UnsupportedOperationException"


def test_a_primary_scheduled_with_replicas_waits_in_pending_replica_deletion_until_the_last_is_deleted(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, *REPLICA_REGIONS)
    start = datetime.now(UTC)
    regional("eu-west-1").schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    regional("us-east-1").schedule_key_deletion(KeyId=key_id, PendingWindowInDays=10)

    answer = regional(REGION).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=20)

    assert answer["KeyState"] == "PendingReplicaDeletion"
    assert "DeletionDate" not in answer
    metadata = regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingReplicaDeletion"
    assert "DeletionDate" not in metadata
    assert metadata["PendingDeletionWindowInDays"] == 20
    with pytest.raises(ClientError) as unusable:
        regional(REGION).encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(unusable) == "KMSInvalidStateException"

    with time_machine.travel(start + timedelta(days=8), tick=False):  # one replica gone, one left
        assert regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingReplicaDeletion"
        with pytest.raises(ClientError) as gone:
            regional("eu-west-1").describe_key(KeyId=key_id)
        assert error_code(gone) == "NotFoundException"
    with time_machine.travel(start + timedelta(days=11), tick=False):  # the last replica is gone: the window starts
        metadata = regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]
        assert metadata["KeyState"] == "PendingDeletion"
        assert metadata["MultiRegionConfiguration"]["ReplicaKeys"] == []
        expected = start + timedelta(days=10 + 20)
        assert abs(metadata["DeletionDate"] - expected) < timedelta(minutes=1)
    with time_machine.travel(start + timedelta(days=31), tick=False):
        with pytest.raises(ClientError) as deleted:
            regional(REGION).describe_key(KeyId=key_id)
        assert error_code(deleted) == "NotFoundException"


def test_cancelling_a_primary_waiting_for_its_replicas_brings_it_back_disabled(regional: Callable[[str], Any]) -> None:
    key_id = new_primary(regional(REGION))
    import_into(regional(REGION), key_id, os.urandom(32))
    replicate(regional, key_id, "us-east-1")
    regional(REGION).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    regional(REGION).cancel_key_deletion(KeyId=key_id)

    metadata = regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "Disabled"
    assert "PendingDeletionWindowInDays" not in metadata


def test_a_primary_without_replicas_is_scheduled_like_any_key(regional: Callable[[str], Any]) -> None:
    key_id = new_primary(regional(REGION))

    answer = regional(REGION).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    assert answer["KeyState"] == "PendingDeletion"
    assert "DeletionDate" in answer


def test_update_primary_region_swaps_the_primary_with_a_replica(regional: Callable[[str], Any]) -> None:
    key_id = new_primary(regional(REGION))
    replicate(regional, key_id, *REPLICA_REGIONS)

    regional(REGION).update_primary_region(KeyId=key_id, PrimaryRegion="us-east-1")

    configuration = regional("eu-west-1").describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert configuration["MultiRegionKeyType"] == "REPLICA"
    assert configuration["PrimaryKey"]["Region"] == "us-east-1"
    assert sorted(r["Region"] for r in configuration["ReplicaKeys"]) == sorted([REGION, "eu-west-1"])
    assert (
        regional("us-east-1").describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"][
            "MultiRegionKeyType"
        ]
        == "PRIMARY"
    )
    with pytest.raises(ClientError) as from_old_primary:
        regional(REGION).replicate_key(KeyId=key_id, ReplicaRegion="ap-south-1")
    assert error_code(from_old_primary) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as nowhere:
        regional("us-east-1").update_primary_region(KeyId=key_id, PrimaryRegion="ap-south-1")
    assert error_code(nowhere) == "NotFoundException"


def test_the_state_file_keeps_which_regions_hold_a_multi_region_key_and_what_waits_for_them(
    regional: Callable[[str], Any],
) -> None:
    key_id = new_primary(regional(REGION))
    material = os.urandom(32)
    import_into(regional(REGION), key_id, material)
    replicate(regional, key_id, *REPLICA_REGIONS)
    import_into(regional("us-east-1"), key_id, material)
    regional(REGION).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=9)
    before = regional("us-east-1").describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]

    state.restore(json.loads(json.dumps(state.snapshot())))  # what a restart from the file does

    metadata = regional(REGION).describe_key(KeyId=key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingReplicaDeletion"
    assert metadata["PendingDeletionWindowInDays"] == 9
    assert regional("us-east-1").describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"] == before
    with pytest.raises(ClientError) as refused:  # the replica still knows its set's material
        import_into(regional("eu-west-1"), key_id, os.urandom(32))
    assert error_code(refused) == "IncorrectKeyMaterialException"
