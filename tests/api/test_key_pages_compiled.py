"""The key list's compiled SQL (one per query shape) returns exactly what the ORM path returns.

A parameter mapped to the wrong position could show one user another keystore's keys,
so every filter combination is walked page by page, forwards and backwards, for a
member of one keystore, a member of two, a superuser and an outsider, with the cache
cold and warmed by the other users' shapes, and compared body for body with the
uncached ORM path (``KeyViewSet.compiled_pages = False``, today's code).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache

from keys import api
from keys.models import Key
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


def _body(client: Any, url: str, *, compiled: bool, monkeypatch: Any) -> Any:
    monkeypatch.setattr(api.KeyViewSet, "compiled_pages", compiled)
    cache.clear()  # throttles: this test makes thousands of requests
    response = client.get(url)
    return response.status_code, response.json()


def _walk(client: Any, query: dict[str, str], monkeypatch: Any) -> int:
    """Every page forwards, then backwards from the last: both paths give the same bodies. Returns pages seen."""
    url: str | None = "/api/v1/keys/?" + urlencode(query)
    last = None
    seen = 0
    for direction in ("next", "previous"):
        url = url if direction == "next" else last
        while url:
            cached = _body(client, url, compiled=True, monkeypatch=monkeypatch)
            uncached = _body(client, url, compiled=False, monkeypatch=monkeypatch)
            assert cached == uncached, (url, direction)
            status, body = cached
            assert status == 200, body
            seen += 1
            last = url
            url = body[direction]
    return seen


def test_compiled_pages_match_the_orm_for_every_shape_user_and_cursor(
    world: dict[str, Any], people: Any, api_as: Any, monkeypatch: Any
) -> None:
    compiled_runs = []
    real = api._PageRecorder.__getitem__

    def counting(self: Any, page: slice) -> Any:
        compiled_runs.append(page)
        return real(self, page)

    monkeypatch.setattr(api._PageRecorder, "__getitem__", counting)
    monkeypatch.setattr(api, "_COMPILED", {})
    users = [people.dan, people.bob, people.root, people.eve]
    clients = {user.pk: api_as(user).client for user in users}
    filters = _filters(world)
    # Cold for the first user, then warm with the others' shapes; again in reverse order, all warm.
    for user in [*users, *reversed(users)]:
        for query in filters:
            _walk(clients[user.pk], query, monkeypatch)
    assert compiled_runs, "the compiled path never ran"
    # Every shape without ``search`` is compiled: search, a method filter, keeps the ORM path.
    assert len(api._COMPILED) >= 4 * 3 * 2 * 2


def test_what_each_user_sees_through_the_compiled_path(world: dict[str, Any], people: Any, api_as: Any) -> None:
    """Independent of the ORM path: the superuser's warm shape shows nothing to others that is not theirs."""
    stores = world["stores"]

    def ids(user: Any, **query: str) -> set[str]:
        client = api_as(user).client
        found: set[str] = set()
        url: str | None = "/api/v1/keys/?" + urlencode(query)
        while url:
            cache.clear()
            body = client.get(url).json()
            found |= {row["id"] for row in body["results"]}
            url = body["next"]
        return found

    def expected(*names: str, **lookup: Any) -> set[str]:
        keys = Key.objects.filter(keystore__in=[stores[n] for n in names], **lookup)
        return {str(pk) for pk in keys.values_list("pk", flat=True)}

    for store in ("a", "b", "c"):  # the superuser warms every shape first
        assert ids(people.root, keystore=str(stores[store].pk), state="ACTIVE") == expected(store, state="ACTIVE")
    assert ids(people.root) == expected("a", "b", "c")
    assert ids(people.dan) == expected("a")
    assert ids(people.bob) == expected("a", "b")
    assert ids(people.eve) == set()
    assert ids(people.dan, keystore=str(stores["b"].pk), state="ACTIVE") == set()
    assert ids(people.bob, keystore=str(stores["b"].pk), state="ACTIVE") == expected("b", state="ACTIVE")
    assert ids(people.eve, keystore=str(stores["a"].pk), state="ACTIVE") == set()
    assert ids(people.bob, alias=ALIAS, state="DELETED") == expected("a", "b", alias=ALIAS, state="DELETED")


def test_a_cursor_with_a_bad_position_is_refused_alike(world: dict[str, Any], people: Any, api_as: Any) -> None:
    import base64

    client = api_as(people.dan).client
    cursor = base64.b64encode(b"r=0&p=not-a-time").decode()
    url = f"/api/v1/keys/?cursor={cursor}"
    statuses = set()
    for compiled in (True, False):
        api.KeyViewSet.compiled_pages = compiled
        try:
            statuses.add(client.get(url).status_code)
        except Exception as exc:  # the same failure on both paths
            statuses.add(type(exc).__name__)
        finally:
            api.KeyViewSet.compiled_pages = True
    assert len(statuses) == 1, statuses
