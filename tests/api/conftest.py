"""Fixtures of the API tests: clients per persona, and responses checked against the generated schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache as django_cache
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from openapi_schema_validator import OAS30Validator
from rest_framework.test import APIClient


@cache
def openapi() -> dict[str, Any]:
    """The generated OpenAPI document, as clients download it from /api/v1/schema/."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(OpenApiJsonRenderer().render(schema)))


@cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    found = []
    for template, item in openapi()["paths"].items():
        regex = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in item.items():
            found.append((regex, method.upper(), operation))
    return found


def documented_operation(method: str, path: str) -> dict[str, Any]:
    path = urlsplit(path).path
    matches = [op for regex, m, op in _operations() if m == method.upper() and regex.match(path)]
    assert matches, f"{method} {path} is not in the schema"
    # A literal segment ("/keys/{id}/renew/") beats a template: the most specific wins.
    return matches[0] if len(matches) == 1 else min(matches, key=lambda op: len(op["operationId"]))


def assert_conforms(method: str, path: str, response: Any) -> None:
    """The status is documented for the operation, and the body matches its documented schema."""
    operation = documented_operation(method, path)
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method} {path}: {status} is not documented ({sorted(documented)})"
    content = documented[status].get("content")
    if not content:
        return
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    schema = {**content["application/json"]["schema"], "components": openapi()["components"]}
    OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(response.json())


@dataclass
class Api:
    """Calls as one persona (or anonymously), each response checked against the schema."""

    client: APIClient

    def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        kwargs: dict[str, Any] = {"format": "json"} if body is not None else {}
        response = getattr(self.client, method.lower())(path, body, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (response.status_code, getattr(response, "data", response))
        assert_conforms(method, path, response)
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.call("DELETE", path, **kw)


@pytest.fixture(autouse=True)
def _fresh_throttles(request: pytest.FixtureRequest) -> Iterator[None]:
    """Throttle counters live in the cache: each test starts with a full budget.

    The cache is a database table (``CACHE_URL=db://``), so only tests that may use the
    database have counters to clear.
    """
    uses_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if uses_db:
        request.getfixturevalue("db")
        django_cache.clear()
    yield
    if uses_db:
        django_cache.clear()


@pytest.fixture
def api_as(people: Any) -> Any:
    """``api_as(user)`` → an :class:`Api` logged in with a session as ``user`` (``None``: anonymous)."""

    def make(user: Any) -> Api:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return Api(client)

    return make
