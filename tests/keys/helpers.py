"""Shared helpers for key tests: the sandbox's view of a KMS key, and an RSA key pair for downloads."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from byok_portal.aws import SANDBOX_ACCOUNT_ADMIN_ROLE


def sandbox_view(sandbox_url: str, key: Any, region: str = "") -> dict[str, Any]:
    """What the sandbox holds for the key's KMS key, in ``region`` (default: the keystore's; another region for a
    multi-Region key's replica), never the material itself: its SHA-256 and KCV."""
    account = key.keystore.aws_account_id
    region = region or key.keystore.region
    url = f"{sandbox_url}/_sandbox/kms/{account}/{region}/keys/{key.kms_key_id}"
    with urllib.request.urlopen(url) as response:
        return dict(json.loads(response.read()))


_private_keys: dict[int, rsa.RSAPrivateKey] = {}


def rsa_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key pair per size for the whole run (generating RSA keys is slow)."""
    if bits not in _private_keys:
        _private_keys[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _private_keys[bits]


def public_pem(bits: int = 2048) -> str:
    return (
        rsa_private_key(bits)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sandbox_client(sandbox_url: str, service: str, role_arn: str, region: str, **assume_role: Any) -> Any:
    """A boto3 client for ``service`` in the sandbox, with credentials from assuming ``role_arn``."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=sandbox_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="test", **assume_role)["Credentials"]
    return boto3.client(  # type: ignore[call-overload]  # service is chosen by the caller
        service,
        endpoint_url=sandbox_url,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def kms_client(sandbox_url: str, keystore: Any) -> Any:
    """A boto3 KMS client in the keystore's sandbox account: how a test acts behind the portal's back."""
    return sandbox_client(sandbox_url, "kms", keystore.role_arn, keystore.region, ExternalId=keystore.external_id)


def account_admin_iam(sandbox_url: str, account: str, region: str) -> Any:
    """An IAM client acting as an administrator of ``account`` (to create the customer's role)."""
    return sandbox_client(sandbox_url, "iam", f"arn:aws:iam::{account}:role/{SANDBOX_ACCOUNT_ADMIN_ROLE}", region)


def live_portal_kms_keys(sandbox_url: str, keystore: Any, tag_key: str) -> set[str]:
    """ARNs of KMS keys in the account that carry the portal's tag and are not pending deletion."""
    client = kms_client(sandbox_url, keystore)
    live = set()
    for entry in client.list_keys()["Keys"]:
        meta = client.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
        tags = {t["TagKey"] for t in client.list_resource_tags(KeyId=entry["KeyId"])["Tags"]}
        if tag_key in tags and meta["KeyState"] != "PendingDeletion":
            live.add(meta["Arn"])
    return live


def current_sealed(key: Any) -> bytes | None:
    """The sealed copy of the key's current material version (None once cleanup destroyed it)."""
    from keys.models import KeyMaterial, MaterialState

    version = KeyMaterial.objects.get(key_id=key.pk, state=MaterialState.CURRENT)
    return bytes(version.material_sealed) if version.material_sealed else None


def current_material(key: Any) -> bytearray:
    """The key's current material in the clear (tests only: to check it survived)."""
    from keys import custody
    from keys.models import KeyMaterial, MaterialState

    version = KeyMaterial.objects.get(key_id=key.pk, state=MaterialState.CURRENT)
    material = custody.unseal(key.pk, version.material_sealed or b"", version.version)
    assert isinstance(material, bytearray), "material held by the HSM has no plaintext here"
    return material
