"""The API docs explain every way to authenticate that exists (issue 13 §10)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import openapi


def test_the_schema_explains_session_csrf_and_bearer_id_tokens() -> None:
    document = openapi()
    intro = document["info"]["description"]
    for must in ("/accounts/login/", "X-CSRFToken", "csrftoken", "Authorization: Bearer", "at+jwt", "(iss, sub)"):
        assert must in intro, must
    schemes = document["components"]["securitySchemes"]
    assert schemes["oidcIdToken"]["scheme"] == "bearer"
    assert schemes["cookieAuth"] == {"type": "apiKey", "in": "cookie", "name": "sessionid"}


@pytest.mark.django_db
def test_the_docs_page_serves_that_schema(api_as: Any, people: Any) -> None:
    client = api_as(people.bob).client
    assert client.get("/api/v1/docs/").status_code == 200
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "X-CSRFToken" in schema.json()["info"]["description"]
