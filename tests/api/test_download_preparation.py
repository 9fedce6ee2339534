"""Issue 12 item 12: a pending download preparation cannot be silently replaced; it can be withdrawn (audited);
the prepare and download answers name the public key by its SHA-256 fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.models import AuditEvent
from tests.keys.helpers import public_pem, rsa_private_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def fingerprint_of(private_key: rsa.RSAPrivateKey) -> str:
    """Computed here from the key pair, as a downloader would with openssl: SHA-256 of the DER SPKI."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture
def key_url(api_as: Any, people: Any, keystore: Any) -> str:
    key = api_as(people.bob).post(URL, {"keystore": str(keystore.pk), "name": "orders"}, expect=201).json()
    return f"{URL}{key['id']}/"


def test_a_second_preparation_while_one_is_pending_is_a_409_with_the_pending_one(
    api_as: Any, people: Any, key_url: str
) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    prepared = bob.post(f"{key_url}prepare-download/", {"public_key": public_pem(2048)}, expect=200).json()
    assert prepared["download"]["public_key_fingerprint"] == fingerprint_of(rsa_private_key(2048))
    assert prepared["download"]["prepared_by"] == "local|bob"

    refused = carol.post(f"{key_url}prepare-download/", {"public_key": public_pem(3072)}, expect=409).json()

    assert (refused["code"], refused["reason"], refused["state"]) == ("invalid_state", "download_pending", "ACTIVE")
    assert refused["public_key_fingerprint"] == fingerprint_of(rsa_private_key(2048))
    assert refused["prepared_by"] == "local|bob"
    event = AuditEvent.objects.filter(operation="prepare_download").order_by("-seq").first()
    assert event is not None
    assert (event.outcome, event.reason, event.actor_sub) == ("refused", "download_pending", "carol")
    # The preparation stands: the download is still wrapped for bob's key, and says so.
    wrapped = carol.post(f"{key_url}download/", expect=200).json()
    assert wrapped["public_key_fingerprint"] == fingerprint_of(rsa_private_key(2048))


def test_the_preparer_or_an_admin_may_withdraw_a_preparation_and_no_one_else(
    api_as: Any, people: Any, key_url: str
) -> None:
    bob, carol, alice = api_as(people.bob), api_as(people.carol), api_as(people.alice)
    bob.post(f"{key_url}prepare-download/", {"public_key": public_pem(2048)}, expect=200)

    denied = carol.post(f"{key_url}withdraw-download/", expect=403).json()
    assert denied["code"] == "permission_denied"
    assert bob.get(key_url, expect=200).json()["download_prepared"] is True

    assert bob.post(f"{key_url}withdraw-download/", expect=200).json()["download_prepared"] is False
    withdrawn = AuditEvent.objects.get(operation="withdraw_download", outcome="success")
    assert withdrawn.details["public_key_fingerprint"] == fingerprint_of(rsa_private_key(2048))
    assert withdrawn.details["prepared_by"] == "local|bob"
    assert carol.post(f"{key_url}download/", expect=409).json()["reason"] == "not_prepared"

    # Now carol may prepare; an admin (alice) may withdraw carol's.
    carol.post(f"{key_url}prepare-download/", {"public_key": public_pem(3072)}, expect=200)
    alice.post(f"{key_url}withdraw-download/", expect=200)
    assert AuditEvent.objects.filter(operation="withdraw_download", outcome="success").count() == 2
    assert AuditEvent.objects.filter(operation="withdraw_download", outcome="refused").count() == 1
    nothing = bob.post(f"{key_url}withdraw-download/", expect=409).json()
    assert nothing["reason"] == "not_prepared"


def test_an_expired_preparation_may_be_replaced(api_as: Any, people: Any, key_url: str, settings: Any) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    bob.post(f"{key_url}prepare-download/", {"public_key": public_pem(2048)}, expect=200)
    settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS = 0
    replaced = carol.post(f"{key_url}prepare-download/", {"public_key": public_pem(3072)}, expect=200).json()
    assert replaced["download"]["prepared_by"] == "local|carol"
    assert replaced["download"]["public_key_fingerprint"] == fingerprint_of(rsa_private_key(3072))
