"""A database outage answers 503 with Retry-After, not 500 (issue 12, item 6).

The outage is real: the portal's PostgreSQL connection is pointed at a port where
nothing listens, so every query fails the way it does while PostgreSQL restarts.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection
from django.test import Client, RequestFactory

from byok_portal import health
from byok_portal.handlers import server_error
from byok_portal.middleware import RETRY_AFTER_SECONDS

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the outage is simulated on a PostgreSQL connection (set DATABASE_URL)")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def database_away() -> Iterator[None]:
    """Inside the block every new connection to the database is refused, as during a PostgreSQL restart."""
    saved = (connection.settings_dict["HOST"], connection.settings_dict["PORT"])
    connection.close()
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", closed_port()
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = saved


@pytest.fixture
def logged_in(people: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(people.alice)
    return client


def test_the_api_answers_503_json_with_retry_after_while_the_database_is_away(logged_in: Client) -> None:
    assert logged_in.get("/api/v1/keystores/").status_code == 200
    with database_away():
        response = logged_in.get("/api/v1/keystores/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.json()["code"] == "service_unavailable"
    assert "database is unavailable" in response.json()["detail"]
    assert logged_in.get("/api/v1/keystores/").status_code == 200  # back as soon as the database is


def test_a_page_answers_a_small_503_page_with_retry_after(logged_in: Client) -> None:
    with database_away():
        response = logged_in.get("/")
        post = logged_in.post("/keystores/new/", {"name": "x"})
    for answer in (response, post):
        assert answer.status_code == 503
        assert answer["Retry-After"] == str(RETRY_AFTER_SECONDS)
        assert answer["Content-Type"].startswith("text/html")
        assert "Temporarily unavailable" in answer.content.decode()


def test_an_outage_outside_any_view_is_a_503_too() -> None:
    """Django hands errors raised in middleware (e.g. saving a session) to handler500, inside its except block."""
    request = RequestFactory().get("/api/v1/keys/")
    with database_away():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            assert sys.exc_info()[0] is not None
            response = server_error(request)
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_readyz_says_the_database_is_away_and_healthz_stays_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrations_applied", False)
    client = Client(raise_request_exception=False)
    assert client.get("/readyz").json() == {
        "ready": True,
        "checks": {"database": "ok", "migrations": "ok", "broker": "ok"},
    }
    monkeypatch.setattr(health, "_migrations_applied", False)
    with database_away():
        ready = client.get("/readyz")
        alive = client.get("/healthz")
    assert ready.status_code == 503
    checks = {"database": "unavailable", "migrations": "unknown", "broker": "ok"}
    assert ready.json() == {"ready": False, "checks": checks}
    assert alive.status_code == 200


def test_connections_killed_by_a_postgresql_restart_answer_503(logged_in: Client) -> None:
    """A restart terminates every backend: the portal's open connection breaks under the next query."""
    import psycopg

    assert logged_in.get("/api/v1/keystores/").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    response = logged_in.get("/api/v1/keystores/")
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    connection.close()  # what Django does at the start of the next request (CONN_HEALTH_CHECKS)
    assert logged_in.get("/api/v1/keystores/").status_code == 200
