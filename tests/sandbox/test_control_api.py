"""The /_sandbox/ inspection and control API, and region coverage."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox_aws.sts import ACCOUNT_ADMIN_ROLE

from .conftest import REGION, error_code

SUMMARY_FIELDS = {
    "key_id",
    "arn",
    "key_state",
    "origin",
    "has_material",
    "material_sha256",
    "kcv",
    "public_key_sha256",
    "key_spec",
    "key_usage",
    "aliases",
    "tags",
    "deletion_date",
    "expiration_model",
    "valid_to",
    "materials",
}


def test_key_summary_has_the_documented_fields_and_never_the_material(
    kms: Any, external_key: str, import_material: Callable[..., Any], inspect_key: Callable[..., Any]
) -> None:
    material = os.urandom(32)
    import_material(external_key, material)
    kms.create_alias(AliasName="alias/inspected", TargetKeyId=external_key)

    summary = inspect_key(external_key)

    assert set(summary) == SUMMARY_FIELDS
    assert summary["key_state"] == "Enabled"
    assert summary["origin"] == "EXTERNAL"
    assert summary["aliases"] == ["alias/inspected"]
    assert summary["tags"] == {"portal": "test"}
    assert summary["expiration_model"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert summary["valid_to"] is None
    assert [(m["state"], m["imported"]) for m in summary["materials"]] == [("CURRENT", True)]
    assert material.hex() not in str(summary).lower()


def test_unknown_key_is_404(sandbox_api: Callable[..., Any], account_id: str) -> None:
    status, body = sandbox_api("GET", f"/_sandbox/kms/{account_id}/{REGION}/keys/0b7fd7dd-bac6-4ef2-9790-413567cad8c8")

    assert status == 404
    assert body["error"] == "NotFoundException"


def test_purged_key_disappears(kms: Any, external_key: str, sandbox_api: Callable[..., Any], account_id: str) -> None:
    kms.create_alias(AliasName="alias/purged", TargetKeyId=external_key)
    kms.schedule_key_deletion(KeyId=external_key, PendingWindowInDays=7)

    status, body = sandbox_api("POST", f"/_sandbox/kms/{account_id}/{REGION}/keys/{external_key}/purge")

    assert (status, body) == (200, {"key_id": external_key, "purged": True})
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId=external_key)
    assert error_code(excinfo) == "NotFoundException"
    assert all(alias["AliasName"] != "alias/purged" for alias in kms.list_aliases()["Aliases"])


def test_call_counter_counts_aws_calls_per_operation_and_resets(
    kms: Any, external_key: str, sandbox_api: Callable[..., Any]
) -> None:
    assert sandbox_api("POST", "/_sandbox/calls/reset") == (200, {})

    kms.describe_key(KeyId=external_key)
    kms.describe_key(KeyId=external_key)
    with pytest.raises(ClientError):
        kms.enable_key(KeyId=external_key)

    assert sandbox_api("GET", "/_sandbox/calls") == (200, {"KMS.DescribeKey": 2, "KMS.EnableKey": 1})


def test_reset_forgets_everything(
    kms: Any, external_key: str, sandbox_api: Callable[..., Any], account_id: str
) -> None:
    status, body = sandbox_api("POST", "/_sandbox/reset")

    assert (status, body) == (200, {"reset": True})
    assert sandbox_api("GET", "/_sandbox/calls") == (200, {})
    assert sandbox_api("GET", f"/_sandbox/kms/{account_id}/{REGION}/keys/{external_key}")[0] == 404
    # The session the client got before is forgotten too.
    with pytest.raises(ClientError) as excinfo:
        kms.describe_key(KeyId=external_key)
    assert error_code(excinfo) == "UnrecognizedClientException"


def test_unknown_sandbox_path_and_wrong_method_are_refused(sandbox_api: Callable[..., Any]) -> None:
    assert sandbox_api("GET", "/_sandbox/nothing")[0] == 404
    assert sandbox_api("GET", "/_sandbox/reset")[0] == 405


def _kms_regions() -> list[tuple[str, str]]:
    session = boto3.session.Session()
    return [
        (partition, region)
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("kms", partition_name=partition)
    ]


def test_every_region_botocore_knows_kms_in_works(assume_role: Callable[..., Any], account_id: str) -> None:
    regions = _kms_regions()
    assert len(regions) > 20

    for partition, region in regions:
        kms = assume_role(f"arn:{partition}:iam::{account_id}:role/{ACCOUNT_ADMIN_ROLE}", region=region)
        metadata = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
        assert metadata["KeyState"] == "PendingImport", region
        assert metadata["Arn"].startswith(f"arn:{partition}:kms:{region}:{account_id}:key/"), region
