"""Key specs on the key pages (SPEC §9): create form, detail, list filter."""

from __future__ import annotations

from typing import Any

import pytest

from keys import services
from keys.models import Key
from tests.web import verified_client


@pytest.mark.django_db
def test_the_key_list_page_filters_by_spec(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    for spec in ("SYMMETRIC_DEFAULT", "HMAC_224"):
        services.key_create(actor=bob, keystore_id=keystore.pk, name=spec, key_spec=spec)
    page = verified_client(people.dan).get("/keys/?key_spec=HMAC_224")
    assert page.status_code == 200
    assert [k.name for k in page.context["page"].object_list] == ["HMAC_224"]


@pytest.mark.django_db
def test_a_custodian_creates_an_ec_key_on_the_page(people: Any, keystore: Any, aws_sandbox: str) -> None:
    client = verified_client(people.bob)
    form = {"keystore": str(keystore.pk), "name": "code signing", "key_spec": "ECC_NIST_P384", "key_usage": ""}
    response = client.post("/keys/new/", form)
    assert response.status_code == 302, response.content[:500]
    key = Key.objects.get(name="code signing")
    assert (key.key_spec, key.key_usage) == ("ECC_NIST_P384", "SIGN_VERIFY")
    detail = client.get(f"/keys/{key.pk}/").content.decode()
    assert key.public_key_sha256 in detail
    assert "ECC_NIST_P384" in detail
    refused = client.post("/keys/new/", {**form, "name": "bad", "key_usage": "ENCRYPT_DECRYPT"})
    assert refused.status_code == 400
    assert "cannot be used for ENCRYPT_DECRYPT" in refused.content.decode()
    assert not Key.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_the_admin_lists_and_filters_keys_by_spec_and_shows_the_public_key(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    signer = services.key_create(actor=bob, keystore_id=keystore.pk, name="signer", key_spec="ECC_NIST_P384").key
    services.key_create(actor=bob, keystore_id=keystore.pk, name="mac", key_spec="HMAC_256")
    root = verified_client(people.root)
    listed = root.get("/admin/keys/key/?key_spec__exact=ECC_NIST_P384")
    assert [key.name for key in listed.context["cl"].result_list] == ["signer"]
    change = root.get(f"/admin/keys/key/{signer.pk}/change/").content.decode()
    assert signer.public_key_sha256 in change
    assert 'name="key_spec"' not in change  # fixed at creation: shown, never editable
