"""Fixtures for the sandbox AWS tests: one server per session, a fresh account per test.

Everything is checked over HTTP, through boto3 or the ``/_sandbox/`` API, as the portal
and the benchmarks will see it. No Django here.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, Literal

import boto3
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox_aws.server import SandboxServer
from sandbox_aws.sts import ACCOUNT_ADMIN_ROLE

REGION = "eu-central-1"
# Credentials moto maps to its default account; only used to call STS itself.
BOOTSTRAP_ACCESS_KEY = "testing"
BOOTSTRAP_SECRET_KEY = "testing"
# A refused call is the answer under test: never let botocore retry it.
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})
OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RSAES_OAEP_SHA_256": hashes.SHA256,
    "RSAES_OAEP_SHA_1": hashes.SHA1,
}


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    """Base URL of a sandbox AWS running in this process for the whole session."""
    server = SandboxServer(host="127.0.0.1", port=0)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def sts(sandbox_url: str) -> Any:
    """STS client with the bootstrap credentials."""
    return boto3.client(
        "sts",
        endpoint_url=sandbox_url,
        region_name=REGION,
        config=NO_RETRIES,
        aws_access_key_id=BOOTSTRAP_ACCESS_KEY,
        aws_secret_access_key=BOOTSTRAP_SECRET_KEY,
    )


@pytest.fixture
def account_id() -> str:
    """A fresh 12-digit account id, so tests never see each other's keys."""
    return str(secrets.randbelow(9 * 10**11) + 10**11)


@pytest.fixture
def assume_role(sts: Any, sandbox_url: str) -> Callable[..., Any]:
    """``assume_role(role_arn, service="kms", region=REGION, **assume_role_kwargs)`` → client."""

    def make_client(
        role_arn: str, service: Literal["kms", "iam", "sts"] = "kms", region: str = REGION, **kwargs: Any
    ) -> Any:
        credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="sandbox-tests", **kwargs)["Credentials"]
        return boto3.client(
            service,
            endpoint_url=sandbox_url,
            region_name=region,
            config=NO_RETRIES,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    return make_client


def trust_policy(external_id: str | None = None) -> str:
    """A trust policy allowing AssumeRole, with an ExternalId condition if ``external_id`` is given."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture
def account_admin_iam(assume_role: Callable[..., Any], account_id: str) -> Any:
    """IAM client of the test's account's administrator (the sandbox's OrganizationAccountAccessRole)."""
    return assume_role(f"arn:aws:iam::{account_id}:role/{ACCOUNT_ADMIN_ROLE}", service="iam")


@pytest.fixture
def kms(assume_role: Callable[..., Any], account_admin_iam: Any) -> Any:
    """KMS client in a fresh account, reached as the portal does: through a role created there, with STS."""
    role = account_admin_iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=trust_policy())
    return assume_role(role["Role"]["Arn"])


@pytest.fixture
def sandbox_api(sandbox_url: str) -> Callable[..., Any]:
    """``sandbox_api(method, path)`` → (HTTP status, decoded JSON) for the /_sandbox/ API."""

    def call(method: str, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(sandbox_url + path, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return call


@pytest.fixture
def inspect_key(sandbox_api: Callable[..., Any], account_id: str) -> Callable[[str], dict[str, Any]]:
    """Summary of a key in the test's account, from ``GET /_sandbox/kms/...``."""

    def inspect(key_id: str) -> dict[str, Any]:
        status, body = sandbox_api("GET", f"/_sandbox/kms/{account_id}/{REGION}/keys/{key_id}")
        assert status == 200, body
        return dict(body)

    return inspect


def wrap_material(public_key_der: bytes, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> bytes:
    """Wrap key material the way a real client does before ImportKeyMaterial."""
    public_key = serialization.load_der_public_key(public_key_der)
    assert isinstance(public_key, rsa.RSAPublicKey)
    digest = OAEP_HASHES[algorithm]
    return public_key.encrypt(material, padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None))


@pytest.fixture
def external_key(kms: Any) -> str:
    """Id of a new symmetric KMS key with Origin=EXTERNAL, still without material."""
    return str(
        kms.create_key(Origin="EXTERNAL", Tags=[{"TagKey": "portal", "TagValue": "test"}])["KeyMetadata"]["KeyId"]
    )


@pytest.fixture
def import_material(kms: Any) -> Callable[..., Any]:
    """``import_material(key_id, material, algorithm=..., **import_kwargs)``: fetch parameters, wrap, import.

    Defaults to KEY_MATERIAL_DOES_NOT_EXPIRE; pass ExpirationModel/ValidTo to override.
    """

    def do_import(key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256", **kwargs: Any) -> Any:
        params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048")
        kwargs.setdefault("ExpirationModel", "KEY_MATERIAL_DOES_NOT_EXPIRE")
        return kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap_material(params["PublicKey"], material, algorithm),
            **kwargs,
        )

    return do_import


def error_code(excinfo: pytest.ExceptionInfo[Any]) -> str:
    """The AWS error code of a botocore ClientError."""
    return str(excinfo.value.response["Error"]["Code"])
