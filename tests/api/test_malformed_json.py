"""Bodies that ``json.loads`` accepts but nothing after it can handle are a 400, on every endpoint that reads JSON."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from keys.models import Key

pytestmark = pytest.mark.django_db

DEEP = '{"name": ' + "[" * 5000 + "]" * 5000 + "}"
SURROGATE_KEY = '{"\\ud800": "x", "name": "orders"}'
SURROGATE_VALUE = '{"name": "orders\\udfff"}'
NUL_KEY = '{"tags": {"a\\u0000b": "x"}, "name": "orders"}'
NUL_VALUE = '{"name": "orders", "tags": {"team": "pay\\u0000ments"}}'


def _send(client: Any, method: str, path: str, raw: str) -> Any:
    return getattr(client, method)(path, raw, content_type="application/json")


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    from keys.services import key_create

    return key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key


def _endpoints(key: Key) -> list[tuple[str, str]]:
    return [
        ("post", "/api/v1/keys/"),
        ("post", "/api/v1/keystores/"),
        ("patch", f"/api/v1/keys/{key.pk}/"),
        ("post", f"/api/v1/keys/{key.pk}/schedule-deletion/"),
        ("patch", f"/api/v1/keystores/{key.keystore_id}/"),
        ("post", "/api/v1/jobs/"),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (DEEP, "nested deeper"),
        (SURROGATE_KEY, "lone surrogates"),
        (SURROGATE_VALUE, "lone surrogates"),
        (NUL_KEY, "NUL characters"),
        (NUL_VALUE, "NUL characters"),
    ],
    ids=["deep-nesting", "surrogate-key", "surrogate-value", "nul-key", "nul-value"],
)
def test_it_answers_400_with_the_reason_and_changes_nothing(
    api_as: Any, people: Any, key: Key, body: str, reason: str
) -> None:
    client = api_as(people.alice).client
    events = AuditEvent.objects.count()
    for method, path in _endpoints(key):
        response = _send(client, method, path, body)
        assert response.status_code == 400, (method, path, response.status_code)
        assert response.json()["code"] == "parse_error", (method, path, response.json())
        assert reason in response.json()["detail"], (method, path, response.json())
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    assert key.name == "orders"
    assert AuditEvent.objects.count() == events


def test_ordinary_unicode_and_moderate_nesting_still_pass(api_as: Any, people: Any, key: Key) -> None:
    client = api_as(people.bob).client
    response = _send(client, "patch", f"/api/v1/keys/{key.pk}/", '{"name": "Zahlungen \\u00fc \\ud83d\\udd11"}')
    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Zahlungen ü \U0001f511"


@pytest.mark.parametrize("value", ["1953", "true", "19.53", '["orders"]', '{"x": 1}'])
def test_a_number_or_boolean_where_text_belongs_is_refused_not_coerced(
    api_as: Any, people: Any, key: Key, value: str
) -> None:
    client = api_as(people.bob).client
    events = AuditEvent.objects.count()
    for method, path in [
        ("post", "/api/v1/keys/"),
        ("patch", f"/api/v1/keys/{key.pk}/"),
        ("post", "/api/v1/tokens/"),
    ]:
        response = _send(client, method, path, f'{{"name": {value}}}')
        assert response.status_code == 400, (method, path, response.status_code)
        assert list(response.json()) == ["name"], (method, path, response.json())
    key.refresh_from_db()
    assert key.name == "orders"
    assert AuditEvent.objects.count() == events
