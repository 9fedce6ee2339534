"""Proof that KMS holds the portal's material, for HMAC and asymmetric keys (SPEC §9).

Every proof goes through the real doors: keys created by the service, the material
released by a two-person download (the key page's file), unwrapped here with code
written independently of the portal's, and KMS (the sandbox, over boto3) doing the
cryptography with what the portal imported. The ``openssl`` commands the download page
shows are run, as written, against real downloads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from keys import services
from keys.models import Key
from keys.unwrapping import PRIVATE_KEY_FILE, unwrap_commands
from tests.keys.helpers import kms_client, public_pem, rsa_private_key
from tests.web import verified_client

pytestmark = pytest.mark.django_db

DOWNLOAD_KEY_BITS = 3072
OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def create(people: Any, keystore: Any, key_spec: str, key_usage: str | None = None) -> Key:
    return services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name=key_spec, key_spec=key_spec, key_usage=key_usage
    ).key


def download_file(people: Any, key: Key) -> dict[str, Any]:
    """The file the key page hands the second custodian (prepared by bob, downloaded by carol)."""
    services.key_prepare_download(
        actor=people.actor(people.bob), key_id=key.pk, public_key_pem=public_pem(DOWNLOAD_KEY_BITS)
    )
    response = verified_client(people.carol).post(f"/keys/{key.pk}/download/")
    assert response.status_code == 200, response.content[:200]
    document: dict[str, Any] = json.loads(response.content)
    return document


def unwrap(document: dict[str, Any]) -> bytes:
    """Undo the download's wrapping with the prepared key's private half, as its owner would."""
    wrapped = base64.b64decode(document["wrapped_key_material"])
    private_key = rsa_private_key(DOWNLOAD_KEY_BITS)
    if document["wrapping_algorithm"] == "RSAES_OAEP_SHA_256":
        return private_key.decrypt(wrapped, OAEP_SHA256)
    assert document["wrapping_algorithm"] == "RSA_AES_KEY_WRAP_SHA_256"
    split = DOWNLOAD_KEY_BITS // 8
    return aes_key_unwrap_with_padding(private_key.decrypt(wrapped[:split], OAEP_SHA256), wrapped[split:])


def test_a_mac_from_kms_equals_one_computed_from_the_downloaded_material(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    key = create(people, keystore, "HMAC_512")
    document = download_file(people, key)
    assert (document["key_spec"], document["wrapping_algorithm"]) == ("HMAC_512", "RSAES_OAEP_SHA_256")
    material = unwrap(document)
    assert len(material) == 64
    # The HMAC check value of SPEC §9: HMAC with the key's own hash over 16 zero bytes, first 3 bytes.
    assert hmac.new(material, bytes(16), hashlib.sha512).digest()[:3].hex().upper() == key.kcv == document["kcv"]
    message = b"PAN 4111111111111111 amount 100.00"
    kms = kms_client(aws_sandbox, keystore)
    remote = kms.generate_mac(KeyId=key.kms_key_arn, Message=message, MacAlgorithm="HMAC_SHA_512")["Mac"]
    assert remote == hmac.new(material, message, hashlib.sha512).digest()


@pytest.mark.parametrize(
    ("key_spec", "algorithm"),
    [("RSA_2048", "RSASSA_PSS_SHA_256"), ("ECC_NIST_P256", "ECDSA_SHA_256"), ("ECC_SECG_P256K1", "ECDSA_SHA_256")],
)
def test_a_signature_made_by_kms_verifies_under_the_portals_public_key(
    people: Any, keystore: Any, aws_sandbox: str, key_spec: str, algorithm: str
) -> None:
    key = create(people, keystore, key_spec, "SIGN_VERIFY")
    assert key.kcv == ""
    public_key = serialization.load_pem_public_key(key.public_key.encode())
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hashlib.sha256(der).hexdigest() == key.public_key_sha256
    message = b"release v1.2.3"
    kms = kms_client(aws_sandbox, keystore)
    assert kms.get_public_key(KeyId=key.kms_key_arn)["PublicKey"] == der
    signature = kms.sign(KeyId=key.kms_key_arn, Message=message, SigningAlgorithm=algorithm)["Signature"]
    if isinstance(public_key, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
        public_key.verify(signature, message, pss, hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    # And the downloaded private key is the one behind that public key.
    document = download_file(people, key)
    assert document["public_key_sha256"] == key.public_key_sha256
    assert document["kcv"] is None
    private_key = serialization.load_der_private_key(unwrap(document), password=None)
    assert (
        private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == der
    )


def test_an_rsa_ciphertext_made_locally_decrypts_in_kms(people: Any, keystore: Any, aws_sandbox: str) -> None:
    key = create(people, keystore, "RSA_3072", "ENCRYPT_DECRYPT")
    public_key = serialization.load_pem_public_key(key.public_key.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert (public_key.key_size, public_key.public_numbers().e) == (3072, 65537)
    ciphertext = public_key.encrypt(b"account 12345678", OAEP_SHA256)
    kms = kms_client(aws_sandbox, keystore)
    answer = kms.decrypt(KeyId=key.kms_key_arn, CiphertextBlob=ciphertext, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert answer["Plaintext"] == b"account 12345678"


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("openssl is not installed")
    return found


@pytest.mark.parametrize(
    ("key_spec", "custody_backend"),
    [
        ("SYMMETRIC_DEFAULT", "software"),
        ("HMAC_224", "software"),
        ("RSA_2048", "software"),
        ("ECC_NIST_P521", "software"),
        # Material wrapped inside SoftHSM2 (RSAES_OAEP_SHA_1).
        ("SYMMETRIC_DEFAULT", "pkcs11"),
        ("HMAC_384", "pkcs11"),
    ],
    indirect=["custody_backend"],
)
def test_the_pages_openssl_commands_unwrap_a_real_download_and_print_its_check_value(
    people: Any, keystore: Any, aws_sandbox: str, tmp_path: Path, key_spec: str, custody_backend: str
) -> None:
    _openssl()
    key = create(people, keystore, key_spec)
    document = download_file(people, key)
    (tmp_path / f"byok-{key.pk}-wrapped.json").write_text(json.dumps(document, indent=2))
    (tmp_path / PRIVATE_KEY_FILE).write_bytes(
        rsa_private_key(DOWNLOAD_KEY_BITS).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    commands = unwrap_commands(key_spec, file=f"byok-{key.pk}-wrapped.json", algorithm=document["wrapping_algorithm"])
    assert (custody_backend == "pkcs11") == (document["wrapping_algorithm"] == "RSAES_OAEP_SHA_1")
    # The key page (where the download's confirmation points) shows exactly these commands.
    page = verified_client(people.bob).get(f"/keys/{key.pk}/")
    assert page.status_code == 200
    assert _text(commands) in page.content.decode()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()[-1]
    assert printed == (key.kcv or key.public_key_sha256)


def _text(commands: str) -> str:
    """The commands as the page's HTML escapes them."""
    from django.utils.html import escape

    return str(escape(commands))


@pytest.mark.parametrize("key_spec", ["SYMMETRIC_DEFAULT", "HMAC_256", "RSA_2048"])
def test_the_readme_shows_the_commands_the_test_above_runs(key_spec: str) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{unwrap_commands(key_spec)}```" in readme
