"""Key material custody: sealing, binding to the row, KCV, download wrapping, KEK rotation."""

from __future__ import annotations

import base64
import uuid
from io import StringIO
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.exceptions import ValidationError
from django.core.management import call_command

from keys import custody, services
from keys.models import Key
from tests.keys.helpers import current_sealed, public_pem, rsa_private_key

NEW_KEK = base64.b64encode(b"n" * 32).decode()


@pytest.fixture(autouse=True)
def _fresh_kek_cache() -> Any:
    custody.current_kek.cache_clear()
    custody.previous_keks.cache_clear()
    yield
    custody.current_kek.cache_clear()
    custody.previous_keks.cache_clear()


def _cmac_one_block(key: bytes, block: bytes) -> bytes:
    """AES-CMAC of a single full block, straight from RFC 4493 §2.3 on raw AES-ECB."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def aes(data: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block, by the RFC
        return encryptor.update(data) + encryptor.finalize()

    value = int.from_bytes(aes(bytes(16)), "big") << 1
    if value >> 128:
        value = (value & (2**128 - 1)) ^ 0x87
    k1 = value.to_bytes(16, "big")
    return aes(bytes(a ^ b for a, b in zip(block, k1, strict=True)))


def test_the_reference_cmac_reproduces_rfc_4493() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert _cmac_one_block(key, message).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


@pytest.mark.parametrize("material", [bytes(32), bytes(range(32)), b"\xff" * 32])
def test_kcv_is_the_first_three_bytes_of_aes_cmac_over_a_zero_block(material: bytes) -> None:
    assert custody.kcv(material) == _cmac_one_block(material, bytes(16))[:3].hex().upper()


def test_generated_material_is_256_bits_and_never_repeats() -> None:
    samples = {bytes(custody.generate_software_material()) for _ in range(64)}
    assert len(samples) == 64
    assert {len(s) for s in samples} == {32}


def test_sealed_material_opens_only_in_its_own_row() -> None:
    material, mine, other = custody.generate_software_material(), uuid.uuid4(), uuid.uuid4()
    blob = custody.seal(mine, material)
    assert bytes(material) not in blob
    assert custody.unseal(mine, blob) == material
    with pytest.raises(custody.CustodyError):
        custody.unseal(other, blob)


def test_tampered_ciphertext_is_refused() -> None:
    key_id = uuid.uuid4()
    blob = bytearray(custody.seal(key_id, custody.generate_material()))
    blob[-1] ^= 1
    with pytest.raises(custody.CustodyError, match="failed authentication"):
        custody.unseal(key_id, bytes(blob))


def test_material_sealed_under_an_unknown_kek_is_refused(settings: Any) -> None:
    key_id = uuid.uuid4()
    blob = custody.seal(key_id, custody.generate_material())
    settings.BYOK_KEK = NEW_KEK
    custody.current_kek.cache_clear()
    with pytest.raises(custody.CustodyError, match="KEK the portal does not have"):
        custody.unseal(key_id, blob)


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_download_wrapping_is_rsa_oaep_sha256(bits: int) -> None:
    material = custody.generate_software_material()
    wrapped = custody.wrap_for_download(material, public_pem(bits))
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert rsa_private_key(bits).decrypt(wrapped, oaep) == bytes(material)


@pytest.mark.parametrize(
    ("pem", "reason"),
    [
        ("not a key", "Not a PEM-encoded public key"),
        (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            "Only RSA",
        ),
        (
            rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key is the point
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            "1024 bits refused",
        ),
    ],
    ids=["garbage", "ec-key", "rsa-1024"],
)
def test_bad_download_public_keys_are_refused_with_a_reason(pem: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        custody.load_download_public_key(pem)


@pytest.mark.django_db
def test_kek_rotation_rewraps_every_row_and_keeps_the_material(
    people: Any, keystore: Any, aws_sandbox: str, settings: Any
) -> None:
    bob = people.actor(people.bob)
    keys = [services.key_create(actor=bob, keystore_id=keystore.pk, name=f"k{i}").key for i in range(3)]
    before = {k.pk: current_sealed(k) for k in keys}
    settings.BYOK_KEK_PREVIOUS, settings.BYOK_KEK = settings.BYOK_KEK, NEW_KEK
    custody.current_kek.cache_clear()
    custody.previous_keks.cache_clear()

    out = StringIO()
    call_command("byok_rotate_kek", stdout=out)
    assert "re-wrapped 3 key(s)" in out.getvalue()
    for key in Key.objects.filter(pk__in=before):
        sealed = current_sealed(key) or b""
        assert sealed != before[key.pk]
        assert custody.sealed_with_current_kek(sealed)
        assert custody.kcv(custody.unseal(key.pk, sealed, 1)) == key.kcv

    # Without the old KEK the rows still open: nothing depends on it any more.
    settings.BYOK_KEK_PREVIOUS = ""
    custody.previous_keks.cache_clear()
    call_command("byok_rotate_kek", stdout=(out := StringIO()))
    assert "re-wrapped 0 key(s); 3 already" in out.getvalue()
    key = services.key_deactivate(actor=bob, key_id=keys[0].pk).key
    key = services.key_activate(actor=bob, key_id=key.pk).key  # re-imports the material opened with the new KEK
    assert key.state == "ACTIVE"
