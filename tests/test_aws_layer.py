"""The AWS layer against the sandbox over HTTP: AssumeRole with ExternalId, credential caching,
error translation, and bounded timeouts."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine

from byok_portal import aws
from byok_portal.aws import AwsError
from keystores.models import Keystore
from tests.conftest import REGION, create_sandbox_role, new_account_id
from tests.keys.helpers import account_admin_iam

pytestmark = pytest.mark.django_db


def calls(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_sandbox/calls") as response:
        return dict(json.loads(response.read()))


def make_keystore(account: str | None = None, role: str = "byok-portal") -> Keystore:
    account = account or new_account_id()
    return Keystore.objects.create(
        name="k", aws_account_id=account, region=REGION, role_arn=f"arn:aws:iam::{account}:role/{role}"
    )


def create_role_requiring_external_id(url: str, keystore: Keystore, external_id: str) -> None:
    """Create the customer's role in the sandbox IAM, with the trust policy the portal tells them to use."""
    iam = account_admin_iam(url, keystore.aws_account_id, REGION)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::000000000000:role/byok-portal"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }
    iam.create_role(RoleName=keystore.role_arn.rsplit("/", 1)[-1], AssumeRolePolicyDocument=json.dumps(trust))


def test_the_role_is_assumed_with_the_keystores_external_id(aws_sandbox: str) -> None:
    keystore = make_keystore()
    create_role_requiring_external_id(aws_sandbox, keystore, keystore.external_id)
    aws.kms_for(keystore).probe()

    impostor = make_keystore(keystore.aws_account_id, role=keystore.role_arn.rsplit("/", 1)[-1])
    assert impostor.external_id != keystore.external_id  # the confused deputy guesses wrong
    with pytest.raises(AwsError) as refused:
        aws.kms_for(impostor).probe()
    assert (refused.value.kind, refused.value.operation, refused.value.code) == (
        "aws_connection_error",
        "AssumeRole",
        "AccessDenied",
    )


def test_credentials_are_assumed_once_per_keystore_and_renewed_before_they_expire(aws_sandbox: str) -> None:
    first, second = create_sandbox_role(make_keystore()), create_sandbox_role(make_keystore())
    start = calls(aws_sandbox).get("STS.AssumeRole", 0)
    for _ in range(5):
        aws.kms_for(first).probe()
        aws.kms_for(second).probe()
    assert calls(aws_sandbox)["STS.AssumeRole"] - start == 2

    # 56 minutes later the one-hour credentials are inside the refresh margin: assume again, once.
    with time_machine.travel(time.time() + 56 * 60, tick=True):
        aws.kms_for(first).probe()
        aws.kms_for(first).probe()
    assert calls(aws_sandbox)["STS.AssumeRole"] - start == 3


def test_aws_errors_keep_awss_code_message_and_request_id(aws_sandbox: str) -> None:
    kms = aws.kms_for(create_sandbox_role(make_keystore()))
    with pytest.raises(AwsError) as failure:
        kms.describe("11111111-2222-3333-4444-555555555555")
    error = failure.value
    assert (error.kind, error.operation, error.code) == ("kms_error", "DescribeKey", "NotFoundException")
    assert "11111111-2222-3333-4444-555555555555" in error.message
    assert error.request_id
    assert kms.request_ids == [error.request_id]


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_silent_aws_endpoint_times_out_within_the_configured_bound(
    aws_sandbox: str, silent_endpoint: str, settings: Any
) -> None:
    settings.BYOK_SANDBOX_URL = silent_endpoint
    settings.BYOK_AWS_READ_TIMEOUT = 1
    settings.BYOK_AWS_MAX_ATTEMPTS = 2
    started = time.monotonic()
    with pytest.raises(AwsError) as failure:
        aws.kms_for(make_keystore()).probe()
    elapsed = time.monotonic() - started
    assert (failure.value.kind, failure.value.code) == ("aws_connection_error", "Timeout")
    assert elapsed < 10  # two attempts of one second each, plus backoff: bounded, never a hang


def test_an_unreachable_endpoint_is_a_connection_error(aws_sandbox: str, settings: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    settings.BYOK_SANDBOX_URL = f"http://127.0.0.1:{free_port}"
    settings.BYOK_AWS_MAX_ATTEMPTS = 1
    with pytest.raises(AwsError) as failure:
        aws.kms_for(make_keystore()).probe()
    assert failure.value.kind == "aws_connection_error"
    assert failure.value.code == "EndpointConnectionError"


def test_the_sandbox_is_used_only_when_enabled(settings: Any) -> None:
    settings.BYOK_SANDBOX = False
    assert aws._endpoint_kwargs() == {}
    settings.BYOK_SANDBOX = True
    assert aws._endpoint_kwargs()["endpoint_url"] == settings.BYOK_SANDBOX_URL


def test_material_is_wrapped_for_import_with_rsa_oaep_sha256_and_only_for_an_rsa_key() -> None:
    """The AWS layer wraps material as GetParametersForImport asks (it no longer borrows custody's code)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    material = bytes(range(32))
    wrapped = aws._wrap_for_import(bytearray(material), der, "RSAES_OAEP_SHA_256")
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert private.decrypt(wrapped, oaep) == material

    not_rsa = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = not_rsa.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(AwsError) as refused:
        aws._wrap_for_import(material, der, "RSAES_OAEP_SHA_256")
    assert (refused.value.operation, refused.value.code) == ("GetParametersForImport", "UnexpectedWrappingKey")


def test_a_private_key_is_wrapped_for_import_with_rsa_aes_key_wrap_sha256() -> None:
    """RSA_AES_KEY_WRAP_SHA_256 (SPEC §9): RSA-OAEP-SHA-256 of a fresh AES-256 key, then RFC 5649 key wrap."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    wrapping_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    der = wrapping_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    material = ec.generate_private_key(ec.SECP521R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrapped = aws._wrap_for_import(bytearray(material), der, "RSA_AES_KEY_WRAP_SHA_256")
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    aes_key = wrapping_key.decrypt(wrapped[: 3072 // 8], oaep)
    assert len(aes_key) == 32
    assert aes_key_unwrap_with_padding(aes_key, wrapped[3072 // 8 :]) == material
