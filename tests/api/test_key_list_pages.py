"""The key list, walked page by page, shows each user exactly their keys, in order, as the model serializer would.

A wrong scope could show one user another keystore's keys, and a wrong cursor could
skip or repeat keys, so every filter combination is walked forwards and backwards
for a member of one keystore, a member of two, a superuser and an outsider, and
compared with a reference computed here without the API's code: visibility from the
memberships, filters as plain Python predicates, the order ``(-created_at, -id)``,
and each row as ``KeySerializer`` writes the model instance.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache

from keys.models import Key
from keys.serializers import KeySerializer
from keystores.models import Keystore, Membership, Role

pytestmark = pytest.mark.django_db

ALIAS = "alias/shared"


def _store(name: str) -> Keystore:
    return Keystore.objects.create(
        name=name, aws_account_id="123456789012", region="eu-west-1", role_arn="arn", external_id=f"e-{name}"
    )


@pytest.fixture
def world(people: Any) -> dict[str, Any]:
    """Keystores a (dan: auditor; bob: custodian), b (bob: auditor) and c (nobody), 130 keys each.

    Creation times repeat in runs of seven, so cursors carry offsets; states, aliases
    and names vary so that every filter keeps some rows and drops others.
    """
    stores = {name: _store(name) for name in ("a", "b", "c")}
    Membership.objects.create(keystore=stores["a"], user=people.dan, role=Role.AUDITOR)
    Membership.objects.create(keystore=stores["a"], user=people.bob, role=Role.CUSTODIAN)
    Membership.objects.create(keystore=stores["b"], user=people.bob, role=Role.AUDITOR)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    keys: list[Key] = []
    for store in stores.values():
        for i in range(130):
            state = ("ACTIVE", "INACTIVE", "DELETED")[i % 3] if i else "ACTIVE"
            alias = ALIAS if i == 0 or state == "DELETED" else (f"alias/{store.name}-{i}" if i % 4 == 0 else "")
            keys.append(Key(keystore=store, name=f"k{i} of {store.name}", alias=alias, state=state))
    Key.objects.bulk_create(keys)
    for n, key in enumerate(keys):
        key.created_at = start + timedelta(seconds=(n % 130) // 7 + (n // 130) * 3)
        key.replaces = keys[n - 1] if n % 10 == 5 else None
    Key.objects.bulk_update(keys, ["created_at", "replaces"])
    return {"stores": stores, "uuid": str(keys[140].pk)}


def _filters(world: dict[str, Any]) -> list[dict[str, str]]:
    stores = world["stores"]
    choices = {
        "keystore": [None, str(stores["a"].pk), str(stores["b"].pk), str(stores["c"].pk)],
        "state": [None, "ACTIVE", "DELETED"],
        "alias": [None, ALIAS],
        "search": [None, "k1", world["uuid"]],
    }
    return [
        {name: value for name, value in zip(choices, combo, strict=True) if value is not None}
        for combo in itertools.product(*choices.values())
    ]


def _matches(key: Key, query: dict[str, str]) -> bool:
    if "keystore" in query and str(key.keystore_id) != query["keystore"]:
        return False
    if "state" in query and key.state != query["state"]:
        return False
    if "alias" in query and key.alias != query["alias"]:
        return False
    if "search" in query:
        text = query["search"].lower()
        found = any(text in value.lower() for value in (key.name, key.alias, key.kms_key_arn))
        if not found and str(key.pk) != query["search"]:
            return False
    return True


def _reference(user: Any, query: dict[str, str]) -> list[dict[str, Any]]:
    """What the list must show ``user`` for ``query``, computed without the API's selectors or filters."""
    if user.is_superuser:
        visible = Key.objects.all()
    else:
        visible = Key.objects.filter(keystore_id__in=Membership.objects.filter(user=user).values("keystore_id"))
    keys = sorted(
        (key for key in visible.select_related("keystore") if _matches(key, query)),
        key=lambda key: (key.created_at, key.pk),
        reverse=True,
    )
    return [dict(KeySerializer(key).data) for key in keys]


def _walk(client: Any, query: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page forwards, then backwards from the last page: the rows in the order each walk met them."""
    forwards: list[dict[str, Any]] = []
    backwards: list[list[dict[str, Any]]] = []
    url: str | None = "/api/v1/keys/?" + urlencode(query)
    last = url
    while url:
        cache.clear()  # throttles: this test makes thousands of requests
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        forwards += body["results"]
        last, url = url, body["next"]
    url = last
    while url:
        cache.clear()
        body = client.get(url).json()
        backwards.insert(0, body["results"])
        url = body["previous"]
    return forwards, [row for page in backwards for row in page]


def test_every_shape_user_and_cursor_shows_exactly_the_reference(
    world: dict[str, Any], people: Any, api_as: Any
) -> None:
    users = [people.dan, people.bob, people.root, people.eve]
    shown = 0
    for user in users:
        client = api_as(user).client
        for query in _filters(world):
            expected = _reference(user, query)
            forwards, backwards = _walk(client, query)
            assert forwards == expected, (user.username, query)
            assert backwards == expected, (user.username, query)
            shown += len(expected)
    assert shown > 1000  # the world is big enough for many pages and every filter keeps some rows


def test_a_forged_cursor_is_answered_not_crashed_on(world: dict[str, Any], people: Any, api_as: Any) -> None:
    """A cursor DRF cannot decode is a 404 (not one this API issued); a position that is no time, a 400."""
    client = api_as(people.dan).client
    for raw, status in ((b"o=x&p=1", 404), (b"r=0&p=not-a-time", 400)):
        cache.clear()
        response = client.get(f"/api/v1/keys/?cursor={base64.b64encode(raw).decode()}")
        assert response.status_code == status, (raw, response.content)
        assert response.json(), raw


def test_a_cursor_does_not_carry_a_user_into_another_keystore(world: dict[str, Any], people: Any, api_as: Any) -> None:
    """A next link taken from the superuser's walk shows dan only dan's keys."""
    root_body = api_as(people.root).client.get("/api/v1/keys/").json()
    cursor = root_body["next"].split("cursor=", 1)[1]
    rows = api_as(people.dan).client.get(f"/api/v1/keys/?cursor={cursor}").json()["results"]
    assert rows
    assert {row["keystore"] for row in rows} == {str(world["stores"]["a"].pk)}
    assert all(uuid.UUID(row["id"]) for row in rows)
