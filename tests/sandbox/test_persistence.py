"""A sandbox with a state file keeps its keys, material, roles and sessions across restarts and crashes.

The sandbox runs as ``make run`` runs it (``python -m sandbox_aws --state FILE``), in its
own process, and is stopped with SIGTERM or killed with SIGKILL between the calls.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox_aws import state
from sandbox_aws.kms import material_fingerprint
from sandbox_aws.sts import ACCOUNT_ADMIN_ROLE

from .conftest import BOOTSTRAP_ACCESS_KEY, BOOTSTRAP_SECRET_KEY, NO_RETRIES, REGION, error_code, trust_policy
from .conftest import wrap_material as wrap
from .test_kms_key_specs import do_import, material_for
from .test_kms_key_specs import wrap as wrap_for

ACCOUNT = "314159265358"
EXTERNAL_ID = "ks-restart"


class SandboxProcess:
    """``python -m sandbox_aws --state FILE`` in a child process; its output is kept to search for leaks."""

    def __init__(self, state_file: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox_aws", "--port", "0", "--state", str(state_file), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline().strip()
        assert banner.startswith("sandbox AWS listening on "), banner
        self.url = banner.removeprefix("sandbox AWS listening on ").split(" ", 1)[0]
        self.output = banner

    def client(self, service: str, credentials: dict[str, str] | None = None) -> Any:
        keys = credentials or {"aws_access_key_id": BOOTSTRAP_ACCESS_KEY, "aws_secret_access_key": BOOTSTRAP_SECRET_KEY}
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, config=NO_RETRIES, **keys)  # type: ignore[call-overload]

    def assume(self, role_arn: str, **kwargs: Any) -> dict[str, str]:
        creds = self.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="restart", **kwargs)["Credentials"]
        return {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }

    def inspect(self, key_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sandbox/kms/{ACCOUNT}/{REGION}/keys/{key_id}") as response:
            return dict(json.loads(response.read()))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=20)
        assert self.process.stdout is not None
        self.output += self.process.stdout.read()
        return code


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "var" / "sandbox" / "state.json"


@pytest.fixture
def processes() -> Iterator[list[SandboxProcess]]:
    started: list[SandboxProcess] = []
    yield started
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.process.kill()
            sandbox.process.wait()


def start(processes: list[SandboxProcess], state_file: Path, *extra: str) -> SandboxProcess:
    sandbox = SandboxProcess(state_file, *extra)
    processes.append(sandbox)
    return sandbox


def portal_role(sandbox: SandboxProcess) -> str:
    """The keystore's role, created by the account's administrator with an ExternalId condition."""
    admin = sandbox.assume(f"arn:aws:iam::{ACCOUNT}:role/{ACCOUNT_ADMIN_ROLE}")
    iam = sandbox.client("iam", admin)
    return str(
        iam.create_role(RoleName="byok-portal", AssumeRolePolicyDocument=trust_policy(EXTERNAL_ID))["Role"]["Arn"]
    )


def import_into(kms: Any, key_id: str, material: bytes) -> None:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def test_a_restart_keeps_keys_material_aliases_tags_states_tokens_roles_and_sessions(
    processes: list[SandboxProcess], state_file: Path
) -> None:
    first = start(processes, state_file)
    role_arn = portal_role(first)
    session = first.assume(role_arn, ExternalId=EXTERNAL_ID)
    kms = first.client("kms", session)
    material = os.urandom(32)
    active = kms.create_key(Origin="EXTERNAL", Tags=[{"TagKey": "byok-portal", "TagValue": "k1"}])["KeyMetadata"]
    import_into(kms, active["KeyId"], material)
    kms.create_alias(AliasName="alias/orders", TargetKeyId=active["KeyId"])
    ciphertext = kms.encrypt(KeyId="alias/orders", Plaintext=b"order 42")["CiphertextBlob"]
    disabled = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_into(kms, disabled, os.urandom(32))
    kms.disable_key(KeyId=disabled)
    doomed = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    deletion_date = kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)["DeletionDate"]
    waiting = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    pending_import = kms.get_parameters_for_import(
        KeyId=waiting, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    before = first.inspect(active["KeyId"])
    assert first.stop() == 0

    second = start(processes, state_file)
    kms = second.client("kms", session)  # credentials handed out before the restart

    assert second.inspect(active["KeyId"]) == before
    assert before["kcv"] == material_fingerprint(material).kcv
    assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"order 42"
    assert kms.describe_key(KeyId="alias/orders")["KeyMetadata"]["Arn"] == active["Arn"]
    assert kms.list_resource_tags(KeyId=active["KeyId"])["Tags"] == [{"TagKey": "byok-portal", "TagValue": "k1"}]
    assert kms.describe_key(KeyId=disabled)["KeyMetadata"]["KeyState"] == "Disabled"
    doomed_after = kms.describe_key(KeyId=doomed)["KeyMetadata"]
    assert (doomed_after["KeyState"], doomed_after["DeletionDate"]) == ("PendingDeletion", deletion_date)
    # The import token issued before the restart still fits its key.
    kms.import_key_material(
        KeyId=waiting,
        ImportToken=pending_import["ImportToken"],
        EncryptedKeyMaterial=wrap(pending_import["PublicKey"], os.urandom(32)),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert kms.describe_key(KeyId=waiting)["KeyMetadata"]["KeyState"] == "Enabled"
    # The key is still bound to its material: only the same material fits again.
    kms.disable_key(KeyId=active["KeyId"])
    kms.delete_imported_key_material(KeyId=active["KeyId"])
    with pytest.raises(ClientError) as excinfo:
        import_into(kms, active["KeyId"], os.urandom(32))
    assert error_code(excinfo) == "IncorrectKeyMaterialException"
    # The role and its trust policy came back too.
    assert second.assume(role_arn, ExternalId=EXTERNAL_ID)
    with pytest.raises(ClientError) as excinfo:
        second.assume(role_arn, ExternalId="ks-other")
    assert error_code(excinfo) == "AccessDenied"
    assert second.stop() == 0
    # Material is in the state file (said so in the docs), but never in the sandbox's output.
    for secret in (material.hex(), base64.b64encode(material).decode()):
        assert secret not in first.output + second.output


def test_a_killed_sandbox_keeps_everything_it_answered(processes: list[SandboxProcess], state_file: Path) -> None:
    first = start(processes, state_file)
    kms = first.client("kms", first.assume(portal_role(first), ExternalId=EXTERNAL_ID))
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    import_into(kms, key_id, os.urandom(32))
    first.stop(signal.SIGKILL)

    second = start(processes, state_file)

    assert second.inspect(key_id)["key_state"] == "Enabled"


def test_the_state_file_is_private(processes: list[SandboxProcess], state_file: Path) -> None:
    sandbox = start(processes, state_file)
    portal_role(sandbox)

    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_file.parent.stat().st_mode) == 0o700


def test_reset_forgets_only_on_request(processes: list[SandboxProcess], state_file: Path) -> None:
    first = start(processes, state_file)
    session = first.assume(portal_role(first), ExternalId=EXTERNAL_ID)
    kms = first.client("kms", session)
    kept = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    first.stop()
    assert start(processes, state_file).inspect(kept)["key_id"] == kept
    processes[-1].stop()

    after_reset = start(processes, state_file, "--reset")

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        after_reset.inspect(kept)
    assert excinfo.value.code == 404
    with pytest.raises(ClientError) as denied:
        after_reset.assume(f"arn:aws:iam::{ACCOUNT}:role/byok-portal", ExternalId=EXTERNAL_ID)
    assert error_code(denied) == "AccessDenied"
    # Credentials handed out before the reset are unknown now, as on AWS: never a lookup in another account.
    with pytest.raises(ClientError) as unknown:
        after_reset.client("kms", session).create_key(Origin="EXTERNAL")
    assert error_code(unknown) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as unknown_to_sts:
        after_reset.client("sts", session).get_caller_identity()
    assert error_code(unknown_to_sts) == "InvalidClientTokenId"


def test_the_reset_endpoint_empties_the_state_file(processes: list[SandboxProcess], state_file: Path) -> None:
    first = start(processes, state_file)
    kms = first.client("kms", first.assume(portal_role(first), ExternalId=EXTERNAL_ID))
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    request = urllib.request.Request(f"{first.url}/_sandbox/reset", method="POST", data=b"")
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read()) == {"reset": True}
    first.stop()

    second = start(processes, state_file)

    with pytest.raises(urllib.error.HTTPError):
        second.inspect(key_id)


def test_an_unreadable_state_file_stops_the_sandbox_and_is_left_alone(state_file: Path) -> None:
    state_file.parent.mkdir(parents=True)
    state_file.write_text('{"format": "byok-sandbox-state/1", "kms": [')

    result = subprocess.run(
        [sys.executable, "-m", "sandbox_aws", "--port", "0", "--state", str(state_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "is not a sandbox state file" in result.stderr
    assert state_file.read_text() == '{"format": "byok-sandbox-state/1", "kms": ['


def test_a_crash_while_writing_leaves_the_previous_state_whole(
    tmp_path: Path, kms: Any, external_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write is interrupted after the new content hit the temporary file, before the rename."""
    path = tmp_path / "state.json"
    state_file = state.StateFile(path)
    state_file.save()
    saved = path.read_bytes()
    assert external_key in saved.decode()
    kms.create_alias(AliasName="alias/unsaved", TargetKeyId=external_key)

    def power_cut(fd: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="power cut"):
        state_file.save()

    assert path.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_make_sandbox_reset_resets_a_running_sandbox(processes: list[SandboxProcess], state_file: Path) -> None:
    running = start(processes, state_file)
    kms = running.client("kms", running.assume(portal_role(running), ExternalId=EXTERNAL_ID))
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]

    result = subprocess.run(
        [sys.executable, "-m", "sandbox_aws.reset", "--state", str(state_file), "--url", running.url],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "reset" in result.stdout
    with pytest.raises(urllib.error.HTTPError):
        running.inspect(key_id)
    assert json.loads(state_file.read_text())["kms"] == []


def test_make_sandbox_reset_removes_the_state_of_a_stopped_sandbox(
    processes: list[SandboxProcess], state_file: Path
) -> None:
    stopped = start(processes, state_file)
    portal_role(stopped)
    stopped.stop()
    assert state_file.exists()

    result = subprocess.run(
        [sys.executable, "-m", "sandbox_aws.reset", "--state", str(state_file), "--url", stopped.url],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert not state_file.exists()


def test_key_pairs_are_made_when_first_used_and_still_sign(kms: Any) -> None:
    """Symmetric keys no longer pay for an unused RSA key pair (restoring 1,000 keys took minutes)."""
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]

    public_key = kms.get_public_key(KeyId=key_id)["PublicKey"]
    signature = kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]

    assert len(public_key) > 256
    assert kms.verify(KeyId=key_id, Message=b"m", Signature=signature, SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "SignatureValid"
    ]


def test_a_restart_keeps_hmac_and_rsa_keys_their_spec_usage_material_and_pending_rsa_aes_token(
    processes: list[SandboxProcess], state_file: Path
) -> None:
    """HMAC and asymmetric keys (issue 14) come back with their spec, usage and imported material."""
    first = start(processes, state_file)
    kms = first.client("kms", first.assume(portal_role(first), ExternalId=EXTERNAL_ID))
    mac_key = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    do_import(kms, mac_key["KeyId"], material_for("HMAC_256"), "RSAES_OAEP_SHA_256")
    mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    rsa_material = material_for("RSA_2048")
    signer = kms.create_key(Origin="EXTERNAL", KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    do_import(kms, signer["KeyId"], rsa_material, "RSA_AES_KEY_WRAP_SHA_256")
    public_key = kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"]
    waiting = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    token = kms.get_parameters_for_import(
        KeyId=waiting["KeyId"], WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256", WrappingKeySpec="RSA_3072"
    )
    assert first.stop() == 0

    second = start(processes, state_file)
    kms = second.client("kms", second.assume(portal_role_arn(), ExternalId=EXTERNAL_ID))

    described = kms.describe_key(KeyId=mac_key["KeyId"])["KeyMetadata"]
    assert (described["KeySpec"], described["KeyUsage"], described["KeyState"]) == (
        "HMAC_256",
        "GENERATE_VERIFY_MAC",
        "Enabled",
    )
    assert described["MacAlgorithms"] == ["HMAC_SHA_256"]
    assert kms.verify_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac)["MacValid"]
    described = kms.describe_key(KeyId=signer["KeyId"])["KeyMetadata"]
    assert (described["KeySpec"], described["KeyUsage"]) == ("RSA_2048", "SIGN_VERIFY")
    # The same imported private key, not a fresh one: its public key is unchanged and it signs verifiably.
    assert kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"] == public_key
    signature = kms.sign(KeyId=signer["KeyId"], Message=b"m", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["Signature"]
    private_key = serialization.load_der_private_key(rsa_material, password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert public_key == private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_key.public_key().verify(signature, b"m", padding.PKCS1v15(), hashes.SHA256())  # raises if not ours
    # Still bound to its own material: another RSA key does not fit after a delete.
    kms.disable_key(KeyId=signer["KeyId"])
    kms.delete_imported_key_material(KeyId=signer["KeyId"])
    with pytest.raises(ClientError) as excinfo:
        do_import(kms, signer["KeyId"], material_for("RSA_2048", fresh=True), "RSA_AES_KEY_WRAP_SHA_256")
    assert error_code(excinfo) == "IncorrectKeyMaterialException"
    # An RSA_AES_KEY_WRAP token issued before the restart still unwraps an EC private key.
    kms.import_key_material(
        KeyId=waiting["KeyId"],
        ImportToken=token["ImportToken"],
        EncryptedKeyMaterial=wrap_for(token["PublicKey"], material_for("ECC_NIST_P256"), "RSA_AES_KEY_WRAP_SHA_256"),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert kms.describe_key(KeyId=waiting["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert second.stop() == 0
    for secret in (rsa_material.hex(), base64.b64encode(rsa_material).decode()):
        assert secret not in first.output + second.output


def portal_role_arn() -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/byok-portal"
