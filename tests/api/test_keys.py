"""Contract tests of the key endpoints against the sandbox AWS: every success and documented error."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from byok_portal.vocabulary import Operation
from keys.custody import kcv
from keys.lifecycle import LIFECYCLE
from tests.keys.helpers import public_pem, rsa_private_key

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def _create(api: Any, keystore: Any, **extra: Any) -> dict[str, Any]:
    body = {"keystore": str(keystore.pk), "name": "orders", **extra}
    return dict(api.post(URL, body, expect=201).json())


def test_a_key_lives_its_whole_life_through_the_api(api_as: Any, people: Any, keystore: Any) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    key = _create(bob, keystore, alias="alias/orders", tags={"app": "shop"}, expires="2030-01-31")
    assert (key["state"], key["kms_state"], key["alias"], key["expires"]) == (
        "ACTIVE",
        "ENABLED",
        "alias/orders",
        "2030-01-31",
    )
    assert key["allowed_operations"] == [
        "deactivate",
        "upload",
        "renew",
        "rotate",
        "schedule_deletion",
        "prepare_download",
        "update",
    ]
    assert key["download_prepared"] is False
    url = f"{URL}{key['id']}/"

    assert bob.post(f"{url}deactivate/", expect=200).json()["state"] == "INACTIVE"
    assert bob.post(f"{url}deactivate/", expect=200).json()["state"] == "INACTIVE"  # a no-op
    assert bob.post(f"{url}activate/", expect=200).json()["state"] == "ACTIVE"
    assert bob.post(f"{url}upload/", expect=200).json()["kms_state"] == "ENABLED"

    assert bob.post(f"{url}prepare-download/", {"public_key": public_pem()}, expect=200).json()["download_prepared"]
    refused = bob.post(f"{url}download/", expect=403).json()
    assert refused["code"] == "two_person_rule"
    wrapped = carol.post(f"{url}download/", expect=200).json()
    assert wrapped["wrapping_algorithm"] == "RSAES_OAEP_SHA_256"
    material = rsa_private_key().decrypt(
        base64.b64decode(wrapped["wrapped_key_material"]),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert kcv(material) == wrapped["kcv"] == key["kcv"]
    assert wrapped["key_id"] == key["id"]
    # Single use: the preparation is gone.
    again = carol.post(f"{url}download/", expect=409).json()
    assert (again["code"], again["reason"]) == ("invalid_state", "not_prepared")
    assert again["allowed_states"] == sorted(LIFECYCLE[Operation.DOWNLOAD].allowed)

    new = bob.post(f"{url}renew/", expect=201).json()
    assert (new["replaces"], new["alias"], new["tags"]) == (key["id"], "alias/orders", {"app": "shop"})
    old = bob.get(url, expect=200).json()
    assert (old["state"], old["replaced_by"], old["alias"]) == ("REPLACED", new["id"], "")

    scheduled = bob.post(f"{url}schedule-deletion/", {"pending_window_days": 7}, expect=200).json()
    assert (scheduled["state"], scheduled["kms_state"]) == ("PENDING_DELETION", "PENDING_DELETION")
    assert scheduled["deletion_date"]
    assert scheduled["allowed_operations"] == ["cancel_deletion", "prepare_download"]
    cancelled = bob.post(f"{url}cancel-deletion/", expect=200).json()
    assert (cancelled["state"], cancelled["kms_state"], cancelled["deletion_date"]) == ("INACTIVE", "EMPTY", None)


def test_it_refuses_an_operation_in_the_wrong_state_listing_the_allowed_states(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)
    key = _create(bob, keystore)
    body = bob.post(f"{URL}{key['id']}/cancel-deletion/", expect=409).json()
    assert (body["code"], body["state"], body["allowed_states"]) == ("invalid_state", "ACTIVE", ["PENDING_DELETION"])
    assert bob.post(f"{URL}{key['id']}/activate/", expect=200).json()["state"] == "ACTIVE"  # a no-op


def test_it_updates_only_the_fields_given(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    key = _create(bob, keystore, tags={"app": "shop"}, expires="2030-01-31")
    updated = bob.patch(f"{URL}{key['id']}/", {"name": "payments", "alias": "alias/pay"}, expect=200).json()
    assert (updated["name"], updated["alias"], updated["tags"], updated["expires"]) == (
        "payments",
        "alias/pay",
        {"app": "shop"},
        "2030-01-31",
    )
    assert bob.patch(f"{URL}{key['id']}/", {"expires": None, "alias": ""}, expect=200).json()["alias"] == ""


def test_it_names_unknown_and_invalid_fields(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    body: dict[str, Any] = {"keystore": str(keystore.pk), "name": "k", "expire": "2030-01-01"}
    assert set(bob.post(URL, body, expect=400).json()) == {"expire"}
    body = {"keystore": str(keystore.pk), "name": "k", "alias": "orders", "expires": "tomorrow"}
    assert set(bob.post(URL, body, expect=400).json()) == {"alias", "expires"}
    body = {"keystore": str(keystore.pk), "name": "k", "tags": {"aws:x": "y"}}
    assert set(bob.post(URL, body, expect=400).json()) == {"tags"}
    key = _create(bob, keystore)
    assert set(bob.patch(f"{URL}{key['id']}/", {"state": "DELETED"}, expect=400).json()) == {"state"}
    assert set(bob.post(f"{URL}{key['id']}/deactivate/", {"force": True}, expect=400).json()) == {"force"}
    window = bob.post(f"{URL}{key['id']}/schedule-deletion/", {"pending_window_days": 3}, expect=400).json()
    assert set(window) == {"pending_window_days"}
    pem = bob.post(f"{URL}{key['id']}/prepare-download/", {"public_key": "not a key"}, expect=400).json()
    assert set(pem) == {"public_key"}
    assert set(bob.post(f"{URL}{key['id']}/prepare-download/", {}, expect=400).json()) == {"public_key"}


def test_an_alias_names_one_live_key(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    _create(bob, keystore, alias="alias/one")
    body = {"keystore": str(keystore.pk), "name": "k", "alias": "alias/one"}
    refused = bob.post(URL, body, expect=409).json()
    assert (refused["code"], refused["alias"], refused["region"]) == ("alias_taken", "alias/one", keystore.region)
    assert f"alias/one is already used in {keystore.region}" in refused["detail"]


def test_it_refuses_small_rsa_keys_for_downloads(api_as: Any, people: Any, keystore: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    bob = api_as(people.bob)
    key = _create(bob, keystore)
    bob.post(f"{URL}{key['id']}/prepare-download/", {"public_key": small}, expect=400)


def test_creating_in_an_unknown_keystore_is_a_404(api_as: Any, people: Any, keystore: Any) -> None:
    body = {"keystore": str(uuid.uuid4()), "name": "k"}
    assert api_as(people.bob).post(URL, body, expect=404).json()["code"] == "not_found"


def test_kms_trouble_is_a_502_with_awss_words(api_as: Any, people: Any, keystore: Any, settings: Any) -> None:
    from byok_portal import aws

    bob = api_as(people.bob)
    key = _create(bob, keystore)
    settings.BYOK_SANDBOX_URL = "http://127.0.0.1:9"  # nothing listens there
    aws.credential_cache.clear()
    body = bob.post(f"{URL}{key['id']}/deactivate/", expect=502).json()
    assert body["code"] == "aws_connection_error"
    assert body["aws_error_code"]
    assert bob.get(f"{URL}{key['id']}/", expect=200).json()["state"] == "ACTIVE"


def test_it_lists_and_filters_keys(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    first = _create(bob, keystore, name="orders", alias="alias/orders")
    second = _create(bob, keystore, name="billing")
    bob.post(f"{URL}{second['id']}/deactivate/", expect=200)

    def ids(query: str) -> list[str]:
        return [k["id"] for k in bob.get(f"{URL}?{query}", expect=200).json()["results"]]

    assert ids(f"keystore={keystore.pk}") == [second["id"], first["id"]]
    assert ids("state=ACTIVE") == [first["id"]]
    assert ids("alias=alias/orders") == [first["id"]]
    assert ids("search=BILL") == [second["id"]]
    assert ids(f"search={first['id']}") == [first["id"]]
    assert ids(f"search={first['kms_key_arn'].rsplit('/', 1)[-1]}") == [first["id"]]
    assert ids(f"keystore={uuid.uuid4()}") == []
    assert set(bob.get(f"{URL}?keystore=nope&state=GONE", expect=400).json()) == {"keystore", "state"}
    assert api_as(people.eve).get(URL, expect=200).json()["results"] == []


def test_pages_are_bounded_and_linked(api_as: Any, people: Any, keystore: Any) -> None:
    from keys.models import Key

    Key.objects.bulk_create(Key(keystore=keystore, name=f"k{i}") for i in range(120))
    dan = api_as(people.dan)
    seen: list[str] = []
    url: str | None = URL
    while url:
        page = dan.get(url, expect=200).json()
        assert len(page["results"]) <= 50
        seen += [k["id"] for k in page["results"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 120


def test_lifecycle_operations_are_throttled_with_retry_after(
    api_as: Any, people: Any, keystore: Any, settings: Any
) -> None:
    from keys.models import Key

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1000/min", "lifecycle": "2/min", "download": "1/min"},
    }
    key = Key.objects.create(keystore=keystore, name="k", state="INACTIVE")
    bob = api_as(people.bob)
    bob.post(f"{URL}{key.pk}/deactivate/", expect=200)  # no-ops spend the budget too
    bob.post(f"{URL}{key.pk}/deactivate/", expect=200)
    response = bob.post(f"{URL}{key.pk}/deactivate/", expect=429)
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    bob.get(f"{URL}{key.pk}/", expect=200)  # reads are not in the lifecycle budget
    bob.post(f"{URL}{key.pk}/prepare-download/", {"public_key": public_pem()}, expect=200)
    bob.post(f"{URL}{key.pk}/download/", expect=429)


def test_empty_filters_are_refused(api_as: Any, people: Any, keystore: Any) -> None:
    assert set(api_as(people.dan).get(f"{URL}?state=&search=", expect=400).json()) == {"state", "search"}


def test_representation_matches_drfs(api_as: Any, people: Any, keystore: Any) -> None:
    """The list's rows and a single key's representation both equal DRF's generic field walk."""
    from datetime import UTC, datetime

    from rest_framework import serializers

    from keys.models import Key
    from keys.selectors import key_rows
    from keys.serializers import KeySerializer, represent_rows

    old = Key.objects.create(
        keystore=keystore,
        name="old",
        state="REPLACED",
        tags={"a": "b"},
        expires="2031-02-03",
        kms_checked_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        deletion_date=datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )
    Key.objects.create(keystore=keystore, name="new", replaces=old, download_public_key="PEM", alias="alias/new")
    Key.objects.create(keystore=keystore, name="gone", state="PENDING_DELETION")
    rows = {row["id"]: row for row in represent_rows(key_rows(people.dan))}
    assert len(rows) == 3
    for key in Key.objects.all():
        generic = serializers.ModelSerializer.to_representation(KeySerializer(), key)
        assert KeySerializer(key).data == generic
        assert rows[str(key.pk)] == generic


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [
        "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "{123e4567-e89b-12d3-a456-426614174000}",
    ],
)
def test_filters_take_uuids_only_in_the_documented_spelling(people: Any, value: str) -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(people.bob)
    for path in ("/api/v1/keys/", "/api/v1/audit/events/"):
        response = client.get(path, {"keystore": value})
        assert response.status_code == 400, path
        assert set(response.json()) == {"keystore"}


def test_list_rows_are_scoped_as_keys_for(people: Any, keystore: Any) -> None:
    """``key_rows`` (the list's values query) sees exactly the keys ``keys_for`` does, per persona."""
    from django.contrib.auth.models import AnonymousUser

    from accounts.models import User
    from keys.models import Key
    from keys.selectors import key_rows, keys_for
    from keystores.models import Keystore

    other = Keystore.objects.create(
        name="other", aws_account_id="210987654321", region="eu-west-1", role_arn="arn", external_id="x"
    )
    Key.objects.create(keystore=keystore, name="mine")
    Key.objects.create(keystore=other, name="theirs")
    root = User.objects.create_superuser(username="root-rows", password="pw-root-rows")
    for user in (people.dan, people.eve, root, AnonymousUser()):
        expected = set(keys_for(user).values_list("pk", flat=True))
        assert {row["id"] for row in key_rows(user)} == expected
    assert len(set(keys_for(root).values_list("pk", flat=True))) == 2
