"""Key specs and usages through the API (SPEC §9): create, representation, download, renew, 400s, filters."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from audit.models import AuditEvent
from keys import custody, services
from keys.models import Key
from tests.keys.helpers import public_pem

URL = "/api/v1/keys/"


@pytest.mark.django_db
def test_a_client_that_names_no_spec_gets_the_symmetric_default(api_as: Any, people: Any, keystore: Any) -> None:
    key = api_as(people.bob).post(URL, {"keystore": str(keystore.pk), "name": "legacy"}, expect=201).json()
    assert (key["key_spec"], key["key_usage"], key["public_key"], key["public_key_sha256"]) == (
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        None,
        None,
    )
    assert len(key["kcv"]) == 6


@pytest.mark.django_db
def test_an_hmac_key_through_the_api(api_as: Any, people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = api_as(people.bob)
    key = bob.post(URL, {"keystore": str(keystore.pk), "name": "mac", "key_spec": "HMAC_384"}, expect=201).json()
    assert (key["key_spec"], key["key_usage"], key["public_key"]) == ("HMAC_384", "GENERATE_VERIFY_MAC", None)
    stored = Key.objects.get(pk=key["id"])
    material = custody.unseal_software(stored.pk, bytes(stored.material_sealed or b""))
    assert key["kcv"] == hmac.new(bytes(material), bytes(16), hashlib.sha384).digest()[:3].hex().upper()
    created = AuditEvent.objects.get(key_id=key["id"], operation="create")
    assert created.details == {"key_spec": "HMAC_384", "key_usage": "GENERATE_VERIFY_MAC"}


@pytest.mark.django_db
def test_an_asymmetric_key_through_the_api_shows_its_public_key_and_downloads_wrapped_with_aes_key_wrap(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    body = {"keystore": str(keystore.pk), "name": "signer", "key_spec": "RSA_2048", "key_usage": "SIGN_VERIFY"}
    key = bob.post(URL, body, expect=201).json()
    assert key["kcv"] is None
    assert key["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert len(key["public_key_sha256"]) == 64
    url = f"{URL}{key['id']}/"
    bob.post(f"{url}prepare-download/", {"public_key": public_pem()}, expect=200)
    wrapped = carol.post(f"{url}download/", expect=200).json()
    assert (wrapped["wrapping_algorithm"], wrapped["key_spec"], wrapped["kcv"]) == (
        "RSA_AES_KEY_WRAP_SHA_256",
        "RSA_2048",
        None,
    )
    assert wrapped["public_key_sha256"] == key["public_key_sha256"]
    renewed = bob.post(f"{url}renew/", expect=201).json()
    assert (renewed["key_spec"], renewed["key_usage"]) == ("RSA_2048", "SIGN_VERIFY")
    assert renewed["public_key_sha256"] != key["public_key_sha256"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"key_spec": "ECC_NIST_P256", "key_usage": "ENCRYPT_DECRYPT"}, "key_usage", "SIGN_VERIFY"),
        ({"key_spec": "HMAC_256", "key_usage": "SIGN_VERIFY"}, "key_usage", "GENERATE_VERIFY_MAC"),
        ({"key_spec": "SYMMETRIC_DEFAULT", "key_usage": "GENERATE_VERIFY_MAC"}, "key_usage", "ENCRYPT_DECRYPT"),
        ({"key_spec": "SM2"}, "key_spec", "China"),
        ({"key_spec": "AES_256"}, "key_spec", "not a valid choice"),
        ({"key_usage": "WRAP"}, "key_usage", "not a valid choice"),
    ],
    ids=["ecc-encrypt", "hmac-sign", "symmetric-mac", "sm2", "unknown-spec", "unknown-usage"],
)
def test_bad_specs_and_pairs_get_a_400_naming_the_field(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str, body: dict[str, str], field: str, words: str
) -> None:
    before = Key.objects.count()
    answer = api_as(people.bob).post(URL, {"keystore": str(keystore.pk), "name": "x", **body}, expect=400).json()
    assert list(answer) == [field]
    assert words in " ".join(answer[field])
    assert Key.objects.count() == before


@pytest.mark.django_db
def test_the_key_list_filters_by_spec_and_usage(api_as: Any, people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    for spec, usage in (("SYMMETRIC_DEFAULT", None), ("HMAC_224", None), ("RSA_2048", "SIGN_VERIFY"),
                        ("RSA_2048", "ENCRYPT_DECRYPT")):  # fmt: skip
        services.key_create(actor=bob, keystore_id=keystore.pk, name=spec, key_spec=spec, key_usage=usage)
    api = api_as(people.dan)
    by_spec = api.get(f"{URL}?key_spec=RSA_2048", expect=200).json()["results"]
    assert sorted(k["key_usage"] for k in by_spec) == ["ENCRYPT_DECRYPT", "SIGN_VERIFY"]
    by_usage = api.get(f"{URL}?key_usage=ENCRYPT_DECRYPT", expect=200).json()["results"]
    assert sorted(k["key_spec"] for k in by_usage) == ["RSA_2048", "SYMMETRIC_DEFAULT"]
