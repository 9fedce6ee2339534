"""Every list page costs the same number of queries at 10 keys as at 1,000."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from byok_portal.vocabulary import KeyState
from keys.models import Key
from tests.pages.conftest import bulk_keys
from tests.web import verified_client

pytestmark = pytest.mark.django_db

# Session, user and OTP device (3), the navigation's count of approvals waiting for the viewer (1),
# then the page's own: counts, rows, permission checks (user + groups), and (SPEC §10) the rotation and
# material-expiry counts (one aggregate) and their two panels' rows.
DASHBOARD_QUERIES = 13
KEYSTORE_LIST_QUERIES = 8
KEY_LIST_QUERIES = 7
# The key page also reads its material versions (SPEC §10) and, for a multi-Region key, its replicas (SPEC §11).
KEY_DETAIL_QUERIES = 11


def _grow_to(keystore: Any, total: int) -> None:
    have = Key.objects.filter(keystore=keystore).count()
    bulk_keys(keystore, total - have, start=have)


def _renewed_key(keystore: Any) -> Key:
    """A key in the middle of a renewal chain, with audit events, as a detail page shows the most."""
    first, middle, last = bulk_keys(keystore, 3, start=5000)
    Key.objects.filter(pk=middle.pk).update(replaces=first, state=KeyState.REPLACED)
    Key.objects.filter(pk=last.pk).update(replaces=middle)
    return middle


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (lambda keystore, key: "/", DASHBOARD_QUERIES),
        (lambda keystore, key: "/keystores/", KEYSTORE_LIST_QUERIES),
        (lambda keystore, key: "/keys/", KEY_LIST_QUERIES),
        (lambda keystore, key: f"/keys/?keystore={keystore.pk}&state=ACTIVE&search=bulk", KEY_LIST_QUERIES),
        (lambda keystore, key: "/keys/?attention=drift", KEY_LIST_QUERIES),
        (lambda keystore, key: "/keys/?attention=expiring&page=2", KEY_LIST_QUERIES),
        (lambda keystore, key: "/keys/?attention=rotation", KEY_LIST_QUERIES),
        (lambda keystore, key: "/keys/?attention=material", KEY_LIST_QUERIES),
        (lambda keystore, key: f"/keys/{key.pk}/", KEY_DETAIL_QUERIES),
    ],
    ids=[
        "dashboard",
        "keystore-list",
        "key-list",
        "key-list-filtered",
        "key-list-drift",
        "key-list-expiring",
        "key-list-rotation",
        "key-list-material",
        "detail",
    ],
)
def test_a_list_page_costs_the_same_at_10_and_1000_keys(
    people: Any,
    keystore: Any,
    django_assert_num_queries: Any,
    page: Callable[[Any, Any], str],
    expected: int,
) -> None:
    key = _renewed_key(keystore)
    client: Client = verified_client(people.bob)
    url = page(keystore, key)
    for total in (10, 1000):
        _grow_to(keystore, total)
        with django_assert_num_queries(expected):
            response = client.get(url)
        assert response.status_code == 200, (url, total)


def test_the_key_list_paginates_instead_of_growing(people: Any, keystore: Any) -> None:
    bulk_keys(keystore, 1000)
    response = verified_client(people.bob).get("/keys/?page=3")
    assert response.status_code == 200
    assert len(response.context["page"].object_list) == 25
    assert "Page 3 of" in response.content.decode()
