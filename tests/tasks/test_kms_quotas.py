"""KMS quota pacing (SPEC §14): the sandbox's quota mode throttles as AWS does, the portal's calls stay
under their share of it, the schedules are shared through Redis, throttles are retried and hard limits not."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from byok_portal import aws
from byok_portal.kms_quotas import Pacer
from tests.faultproxy import fault_proxy
from tests.quota_log import busiest_window, kms_calls, reset_log, set_quota_scale

pytestmark = pytest.mark.django_db


@pytest.fixture
def quota_mode(aws_sandbox: str) -> Iterator[Any]:
    """``quota_mode(scale)``: the sandbox enforces AWS's rates × scale; off again afterwards."""

    def switch(scale: float) -> None:
        set_quota_scale(aws_sandbox, scale)
        reset_log(aws_sandbox)

    yield switch
    set_quota_scale(aws_sandbox, 0)


def _unretried_client(keystore: Any, url: str) -> Any:
    """A KMS client in the keystore's account that never retries, as a customer's script might be."""
    sts = boto3.client(
        "sts", endpoint_url=url, region_name=keystore.region, aws_access_key_id="x", aws_secret_access_key="x"
    )
    creds = sts.assume_role(RoleArn=keystore.role_arn, RoleSessionName="customer", ExternalId=keystore.external_id)
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=keystore.region,
        aws_access_key_id=creds["Credentials"]["AccessKeyId"],
        aws_secret_access_key=creds["Credentials"]["SecretAccessKey"],
        aws_session_token=creds["Credentials"]["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_sandbox_quota_mode_throttles_like_aws(keystore: Any, aws_sandbox: str, quota_mode: Any) -> None:
    quota_mode(1)  # AWS's own rates: GetParametersForImport once every 4 seconds
    kms = _unretried_client(keystore, aws_sandbox)
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = {"KeyId": key_id, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}
    kms.get_parameters_for_import(**params)
    with pytest.raises(ClientError) as refused:
        kms.get_parameters_for_import(**params)
    assert refused.value.response["Error"]["Code"] == "ThrottlingException"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Quotas are per account and operation: CreateKey still has its own.
    kms.create_key(Origin="EXTERNAL")
    log = kms_calls(aws_sandbox)
    assert [(c["operation"], c["throttled"]) for c in log] == [
        ("CreateKey", False),
        ("GetParametersForImport", False),
        ("GetParametersForImport", True),
        ("CreateKey", False),
    ]
    assert {c["account"] for c in log} == {keystore.aws_account_id}


def test_every_portal_kms_call_waits_for_its_share(
    keystore: Any, aws_sandbox: str, quota_mode: Any, settings: Any
) -> None:
    quota_mode(4)  # CreateKey: 20/s in the sandbox
    settings.BYOK_KMS_QUOTA_SHARE = 2.0  # 10/s for the portal: half of the (scaled) quota
    settings.BYOK_KMS_QUOTA_REDIS_URL = ""
    aws.kms_pacer().reset()
    kms = aws.kms_for(keystore)
    reset_log(aws_sandbox)

    def create_some() -> None:
        for _ in range(5):
            kms.create_external_key(description="paced", tags={"t": uuid.uuid4().hex})

    started = time.monotonic()
    threads = [threading.Thread(target=create_some) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    log = [c for c in kms_calls(aws_sandbox) if c["operation"] == "CreateKey"]
    assert len(log) == 15
    assert not any(c["throttled"] for c in log)
    # 15 calls at 10/s, spaced evenly: 1.4 s at least, and never more than 10 in any second (+1 at its edge).
    assert elapsed >= 1.35
    assert busiest_window(log, 1.0)[(keystore.aws_account_id, "CreateKey")] <= 11


def test_the_schedule_in_redis_is_shared_by_every_process(redis_url: str) -> None:
    one, other = Pacer(redis_url, prefix="test"), Pacer(redis_url, prefix="test")
    # Each reservation's slot in time: when it was asked for, plus the wait it was given.
    slots = [
        time.monotonic() + pacer.reserve("123456789012:eu-west-1:CreateKey", 20)
        for _ in range(5)
        for pacer in (one, other)
    ]
    # Ten reservations from two processes' pacers get ten distinct slots 50 ms apart, in order.
    assert all(0.03 <= later - earlier <= 0.07 for earlier, later in itertools.pairwise(slots))
    assert slots[-1] - slots[0] == pytest.approx(0.45, abs=0.03)


def test_throttling_is_retried_with_backoff_and_hard_limits_are_not(
    keystore: Any, aws_sandbox: str, settings: Any
) -> None:
    arn = aws.kms_for(keystore).create_external_key(description="k", tags={})
    with fault_proxy(aws_sandbox) as proxy:
        settings.BYOK_SANDBOX_URL = proxy.url
        aws.credential_cache.clear()
        kms = aws.kms_for(keystore)

        proxy.inject("DescribeKey", "throttle", times=2)
        assert kms.describe(arn).arn == arn
        assert proxy.calls.count("DescribeKey") == 3

        proxy.inject("DescribeKey", "limit")
        with pytest.raises(aws.AwsError) as refused:
            kms.describe(arn)
        assert refused.value.code == "LimitExceededException"
        assert proxy.calls.count("DescribeKey") == 4  # one call: never retried
