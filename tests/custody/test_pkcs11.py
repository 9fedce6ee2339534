"""BYOK_CUSTODY=pkcs11 against a real SoftHSM2 token (SPEC §13): the KEK, material, sessions, KEK rotation.

Every test runs the real PKCS#11 module; KMS is the sandbox over HTTP. The proofs that
no plaintext reaches the portal process are in test_plaintext_never.py.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from pkcs11 import Attribute, ObjectClass

from byok_portal import aws, wrapping
from keys import custody, hsm, services
from keys.models import Key
from tests.custody.softhsm import KEK_LABEL, SoftHsmToken, use_pkcs11
from tests.keys.helpers import current_sealed, public_pem, rsa_private_key, sandbox_view

SOFTWARE_KEK = b"k" * 32  # tests/settings.py's BYOK_KEK


def _token_keys(label: str) -> list[Any]:
    def step(session: Any) -> list[Any]:
        return list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}))

    return hsm.pool().run(step)


def test_init_creates_a_non_extractable_sensitive_kek_once_and_status_reports_the_token(
    softhsm_token: SoftHsmToken, settings: Any
) -> None:
    use_pkcs11(settings, softhsm_token, kek_label=f"kek-{uuid.uuid4().hex[:8]}")
    settings.BYOK_PKCS11_KEK_LABEL = label = f"kek-{uuid.uuid4().hex[:8]}"  # a label nobody created yet
    with pytest.raises(CommandError, match="not ready"):
        call_command("byok_custody", "status", stdout=(out := StringIO()))
    assert "KEK: MISSING" in out.getvalue()

    call_command("byok_custody", "init", stdout=(out := StringIO()))
    assert f"KEK created label={label}" in out.getvalue()
    call_command("byok_custody", "init", stdout=(out := StringIO()))
    assert f"KEK already present: label={label}" in out.getvalue()

    (kek,) = _token_keys(label)
    assert (kek[Attribute.EXTRACTABLE], kek[Attribute.SENSITIVE], kek[Attribute.TOKEN]) == (False, True, True)
    assert (kek[Attribute.WRAP], kek[Attribute.UNWRAP], kek[Attribute.ENCRYPT]) == (True, True, False)
    assert kek[Attribute.VALUE_LEN] == 32
    (binding,) = _token_keys(label + "/binding")
    assert (binding[Attribute.EXTRACTABLE], binding[Attribute.SIGN], binding[Attribute.WRAP]) == (False, True, False)
    assert binding[Attribute.ID] == kek[Attribute.ID]

    call_command("byok_custody", "status", stdout=(out := StringIO()))
    text = out.getvalue()
    assert f"token: {softhsm_token.label} (SoftHSM" in text
    assert f"KEK: label={label} id={bytes(kek[Attribute.ID]).hex()}" in text
    assert "mechanism CKM_AES_KEY_WRAP_PAD: yes" in text
    assert "mechanism CKM_AES_CMAC: yes" in text
    # SoftHSM2 2.6: OAEP with SHA-1 only, which the fixture configures.
    assert "mechanism CKM_RSA_PKCS_OAEP with SHA-256: MISSING" in text
    assert "wrapping for KMS and downloads: RSAES_OAEP_SHA_1" in text


def test_software_backend_has_nothing_to_initialise(settings: Any) -> None:
    settings.BYOK_CUSTODY = "software"
    with pytest.raises(CommandError, match="nothing to initialise"):
        call_command("byok_custody", "init")


@pytest.mark.usefixtures("pkcs11_custody")
@pytest.mark.parametrize("key_spec", ["SYMMETRIC_DEFAULT", "HMAC_256", "HMAC_384", "HMAC_512"])
def test_hsm_material_is_only_a_wrapped_handle_bound_to_its_row(key_spec: str) -> None:
    material = custody.generate_material(key_spec)
    assert isinstance(material, hsm.HsmMaterial)
    with pytest.raises(TypeError):
        bytes(material)  # type: ignore[call-overload]
    assert key_spec in repr(material)
    assert material.wrapped.hex() not in repr(material)
    mine, other = uuid.uuid4(), uuid.uuid4()
    blob = custody.seal(mine, material)
    assert blob.startswith(b"\x03")
    assert not custody.is_software_sealed(blob)
    opened = custody.unseal(mine, blob)
    assert isinstance(opened, hsm.HsmMaterial)
    assert opened.wrapped == material.wrapped
    assert custody.check_values(key_spec, opened).kcv == custody.check_values(key_spec, material).kcv
    with pytest.raises(custody.CustodyError, match="failed authentication"):
        custody.unseal(other, blob)  # copied to another row
    tampered = bytearray(blob)
    tampered[-20] ^= 1
    with pytest.raises(custody.CustodyError, match="failed authentication"):
        custody.unseal(mine, bytes(tampered))
    # The software KEK opens none of it: neither as a software blob nor as the AES-KWP inside.
    with pytest.raises(custody.CustodyError):
        custody.unseal_software(mine, blob)
    with pytest.raises(InvalidUnwrap):
        aes_key_unwrap_with_padding(SOFTWARE_KEK, material.wrapped)


@pytest.mark.usefixtures("pkcs11_custody")
def test_plaintext_is_never_sealed_or_opened_in_software_while_on_pkcs11() -> None:
    with pytest.raises(custody.CustodyError, match="seals only material the HSM holds"):
        custody.seal(uuid.uuid4(), bytearray(32))


@pytest.mark.django_db
@pytest.mark.usefixtures("pkcs11_custody")
@pytest.mark.parametrize("key_spec", ["RSA_2048", "ECC_NIST_P256"])
def test_asymmetric_keys_are_refused_with_the_reason(key_spec: str, people: Any, keystore: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", key_spec=key_spec)
    assert "CKM_RSA_AES_KEY_WRAP" in str(refused.value.message_dict["key_spec"])
    assert not Key.objects.exists()


@pytest.mark.django_db
def test_a_missing_mechanism_is_named_and_nothing_falls_back_to_software(
    pkcs11_custody: SoftHsmToken, settings: Any, people: Any, keystore: Any
) -> None:
    settings.BYOK_PKCS11_OAEP_HASH = "SHA256"  # what production asks for; SoftHSM2 2.6 lacks it
    with pytest.raises(hsm.MissingMechanism) as missing:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k")
    assert missing.value.mechanism == "CKM_RSA_PKCS_OAEP with SHA256/MGF1-SHA256"
    assert "does not fall back to software" in str(missing.value)
    assert (missing.value.status, missing.value.code) == (503, "hsm_mechanism_missing")
    assert not Key.objects.exists()


@pytest.mark.django_db
def test_no_hsm_session_is_held_across_a_kms_call(pkcs11_custody: SoftHsmToken, people: Any, keystore: Any) -> None:
    pool = hsm.pool()
    seen: list[tuple[str, int]] = []

    call = aws.KmsSession._call

    def recording_call(session: aws.KmsSession, operation: str, **kwargs: Any) -> dict[str, Any]:
        # Every KMS call of every session (clients differ per region and per CloudTrail session tag).
        seen.append((operation, pool.in_use))
        return call(session, operation, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aws.KmsSession, "_call", recording_call)
        bob = people.actor(people.bob)
        uses = pool.uses
        key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
        services.key_deactivate(actor=bob, key_id=key.pk)
        services.key_activate(actor=bob, key_id=key.pk)
    assert {"GetParametersForImport", "ImportKeyMaterial", "CreateKey"} <= {name for name, _ in seen}
    assert [entry for entry in seen if entry[1]] == []  # no session lent out while KMS was called
    assert pool.uses > uses


def test_the_pool_waits_a_bounded_time_and_logs_in_again_after_a_token_error(
    softhsm_token: SoftHsmToken, settings: Any
) -> None:
    use_pkcs11(settings, softhsm_token)
    settings.BYOK_PKCS11_POOL_SIZE, settings.BYOK_PKCS11_WAIT_SECONDS = 1, 1
    pool = hsm.pool()
    assert pool.config.pool_size == 1
    holding, release = threading.Event(), threading.Event()

    def hold(session: Any) -> None:
        holding.set()
        release.wait(10)

    holder = threading.Thread(target=pool.run, args=(hold,))
    holder.start()
    holding.wait(5)
    started = time.monotonic()
    with pytest.raises(hsm.HsmUnavailable, match="No HSM session free within 1s"):
        hsm.generate("SYMMETRIC_DEFAULT")
    assert 0.9 < time.monotonic() - started < 3
    release.set()
    holder.join()

    # The token drops every session (and with them the login): the next operation logs in again.
    logins = pool.logins
    session = pool._idle.get_nowait()
    session.close()
    pool._idle.put(session)
    material = hsm.generate("SYMMETRIC_DEFAULT")
    assert len(hsm.check_value(material)) == 6
    assert pool.logins == logins + 1
    pool.close()


@pytest.mark.django_db
def test_pkcs11_kek_rotation_rewraps_inside_the_hsm(
    pkcs11_custody: SoftHsmToken, settings: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    keys = [
        services.key_create(actor=bob, keystore_id=keystore.pk, name=f"k{i}", key_spec=spec).key
        for i, spec in enumerate(["SYMMETRIC_DEFAULT", "HMAC_384"])
    ]
    old_kek = hsm.current_kek_info().kek_id
    use_pkcs11(settings, pkcs11_custody, kek_label=f"{KEK_LABEL}-{uuid.uuid4().hex[:8]}")
    new_kek = hsm.current_kek_info().kek_id
    assert new_kek != old_kek

    call_command("byok_rotate_kek", stdout=(out := StringIO()))
    assert "re-wrapped 2 key(s); 0 already" in out.getvalue()
    for key in Key.objects.filter(pk__in=[k.pk for k in keys]):
        blob = current_sealed(key) or b""
        assert hsm.blob_kek_id(blob) == new_kek
        assert custody.sealed_with_current_kek(blob)
        assert custody.check_values(key.key_spec, custody.unseal(key.pk, blob)).kcv == key.kcv
        # KMS takes back only the same material: re-importing proves the rotation kept it.
        services.key_deactivate(actor=bob, key_id=key.pk)
        assert services.key_activate(actor=bob, key_id=key.pk).key.state == "ACTIVE"
        assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv
    call_command("byok_rotate_kek", stdout=(out := StringIO()))
    assert "re-wrapped 0 key(s); 2 already" in out.getvalue()


@pytest.mark.django_db
def test_software_installation_migrates_into_the_hsm(
    softhsm_token: SoftHsmToken, settings: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    settings.BYOK_CUSTODY = "software"
    bob = people.actor(people.bob)
    keys = [
        services.key_create(actor=bob, keystore_id=keystore.pk, name=f"k{i}", key_spec=spec).key
        for i, spec in enumerate(["SYMMETRIC_DEFAULT", "HMAC_256"])
    ]
    assert all(custody.is_software_sealed(current_sealed(k) or b"") for k in keys)
    use_pkcs11(settings, softhsm_token)
    # Before the migration a software row is not silently used on the pkcs11 backend.
    with pytest.raises(custody.CustodyError, match="run byok_rotate_kek"):
        custody.unseal(keys[0].pk, current_sealed(keys[0]) or b"")

    call_command("byok_rotate_kek", stdout=(out := StringIO()))
    assert "re-wrapped 2 key(s)" in out.getvalue()
    for key in Key.objects.filter(pk__in=[k.pk for k in keys]):
        blob = current_sealed(key) or b""
        assert blob.startswith(hsm.FORMAT_HSM)
        with pytest.raises(custody.CustodyError):
            custody.unseal_software(key.pk, blob)
        services.key_deactivate(actor=bob, key_id=key.pk)
        assert services.key_activate(actor=bob, key_id=key.pk).key.state == "ACTIVE"  # same material, from the HSM
        assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv
        download = public_pem()
        services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=download)
        released = services.key_download(actor=people.actor(people.carol), key_id=key.pk)
        assert released.wrapping_algorithm == "RSAES_OAEP_SHA_1"

    # Going back would take material out of the HSM: refused before any row changes.
    settings.BYOK_CUSTODY = "software"
    with pytest.raises(custody.CustodyError, match="cannot take it out"):
        call_command("byok_rotate_kek")


@pytest.mark.django_db
def test_migration_refuses_before_changing_anything_when_an_asymmetric_key_cannot_move(
    softhsm_token: SoftHsmToken, settings: Any, people: Any, keystore: Any
) -> None:
    settings.BYOK_CUSTODY = "software"
    bob = people.actor(people.bob)
    sym = services.key_create(actor=bob, keystore_id=keystore.pk, name="s").key
    services.key_create(actor=bob, keystore_id=keystore.pk, name="e", key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY")
    before = {k.pk: (current_sealed(k) or b"") for k in Key.objects.all()}
    use_pkcs11(settings, softhsm_token)
    with pytest.raises(
        custody.CustodyError,
        match=r"Keys of ECC_NIST_P256 are sealed under the software KEK.*CKM_RSA_AES_KEY_WRAP.*nothing was changed",
    ):
        call_command("byok_rotate_kek")
    assert {k.pk: (current_sealed(k) or b"") for k in Key.objects.all()} == before
    assert sym.pk in before


def test_the_pin_file_must_be_readable_by_its_owner_only(
    softhsm_token: SoftHsmToken, settings: Any, tmp_path: Path
) -> None:
    use_pkcs11(settings, softhsm_token)
    pin = tmp_path / "pin"
    pin.write_text(softhsm_token.pin + "\n")
    pin.chmod(0o640)
    settings.BYOK_PKCS11_PIN, settings.BYOK_PKCS11_PIN_FILE = "", str(pin)
    with pytest.raises(ImproperlyConfigured, match="must not be readable by group or others"):
        hsm.generate("SYMMETRIC_DEFAULT")
    pin.chmod(0o600)
    assert hsm.pool().config.pin == softhsm_token.pin
    assert softhsm_token.pin not in repr(hsm.pool().config)
    assert isinstance(hsm.generate("SYMMETRIC_DEFAULT"), hsm.HsmMaterial)


def test_a_forked_worker_gets_its_own_pkcs11_state(softhsm_token: SoftHsmToken, settings: Any) -> None:
    """Celery's prefork workers fork after the parent may have used the token: the child initialises again."""
    use_pkcs11(settings, softhsm_token)
    material = hsm.generate("SYMMETRIC_DEFAULT")
    kcv = hsm.check_value(material)
    pid = os.fork()
    if pid == 0:  # the child: exit at once, reporting only whether the HSM answered as in the parent
        try:
            # Its own pool: one session lent and one login of its own, none of the parent's handles.
            same = hsm.check_value(material) == kcv and (hsm.pool().uses, hsm.pool().logins) == (1, 1)
        except BaseException:
            same = False
        os._exit(0 if same else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert hsm.check_value(material) == kcv  # the parent's sessions still work


@pytest.mark.django_db
@pytest.mark.usefixtures("pkcs11_custody")
@pytest.mark.parametrize(("key_spec", "length"), [("HMAC_384", 48), ("HMAC_512", 64), ("SYMMETRIC_DEFAULT", 32)])
def test_material_keeps_its_length_through_the_hsm(
    key_spec: str, length: int, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """What KMS and the downloader receive is exactly the key's bytes, after a round trip through the KEK."""
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", key_spec=key_spec).key
    assert sandbox_view(aws_sandbox, key)["kcv"] == key.kcv  # KMS holds what the HSM generated
    services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem())
    released = services.key_download(actor=people.actor(people.carol), key_id=key.pk)
    material = wrapping.unwrap(released.wrapping_algorithm, rsa_private_key(), released.wrapped_key_material)
    assert len(material) == length
    assert custody.check_values(key_spec, bytearray(material)).kcv == key.kcv


@pytest.mark.django_db
@pytest.mark.usefixtures("pkcs11_custody")
def test_a_28_byte_key_is_refused_where_the_tokens_key_wrap_pads_it(people: Any, keystore: Any) -> None:
    """SoftHSM2 2.6's CKM_AES_KEY_WRAP_PAD gives a 28-byte key back as 32 bytes: HMAC_224 cannot be kept there."""
    assert hsm._kwp_is_exact() is False
    with pytest.raises(ValidationError) as refused:
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", key_spec="HMAC_224")
    assert "zero-padded to a multiple of 8 bytes" in str(refused.value.message_dict["key_spec"])
    assert not Key.objects.exists()
