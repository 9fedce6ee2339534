"""Lists and the key page cost the same number of queries with 10 keys or thousands."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from keys.models import Key
from keystores.models import Keystore, Membership, Role

pytestmark = pytest.mark.django_db


def _grow(keystore: Keystore, people: Any, keys: int, keystores: int) -> Key:
    """Add ``keys`` keys (a renewal chain among them) and ``keystores`` more keystores the auditor can see."""
    stores = Keystore.objects.bulk_create(
        Keystore(
            name=f"s{i}", aws_account_id="123456789012", region="eu-west-1", role_arn="arn", external_id=f"e{keys}-{i}"
        )
        for i in range(keystores)
    )
    Membership.objects.bulk_create(Membership(keystore=s, user=people.dan, role=Role.AUDITOR) for s in stores)
    rows = Key.objects.bulk_create(Key(keystore=keystore, name=f"k{i}", state="ACTIVE") for i in range(keys))
    for old, new in zip(rows[::2], rows[1::2], strict=False):
        new.replaces = old
    Key.objects.bulk_update(rows[1::2], ["replaces"])
    return rows[0]


def _count(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries)


@pytest.mark.parametrize("url", ["/api/v1/keys/", "/api/v1/keys/?state=ACTIVE&search=k", "/api/v1/keystores/", "key"])
def test_query_count_does_not_grow_with_the_data(url: str, api_as: Any, people: Any, keystore: Any) -> None:
    client = api_as(people.dan).client
    key = _grow(keystore, people, keys=10, keystores=2)
    path = f"/api/v1/keys/{key.pk}/" if url == "key" else url
    small = _count(client, path)
    _grow(keystore, people, keys=3000, keystores=120)
    path = f"/api/v1/keys/{key.pk}/" if url == "key" else url
    assert _count(client, path) == small


def test_a_key_list_page_is_one_query_for_the_keys(api_as: Any, people: Any, keystore: Any) -> None:
    _grow(keystore, people, keys=60, keystores=0)
    client = api_as(people.dan).client
    client.get("/api/v1/keys/")  # session and user are loaded the same way on every request
    with CaptureQueriesContext(connection) as queries:
        client.get(f"/api/v1/keys/?keystore={keystore.pk}")
    key_queries = [q["sql"] for q in queries if 'FROM "keys_key"' in q["sql"]]
    assert len(key_queries) == 1, key_queries
