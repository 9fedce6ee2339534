"""SPEC §14's probes: /healthz (liveness) and /readyz (database, broker, migrations applied)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from byok_portal import health
from byok_portal.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_migration_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrations_applied", False)


def test_readyz_is_ready_when_everything_is(settings: Any) -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_names_an_unapplied_migration() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'keys'")
        deleted = cursor.rowcount
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == f"{deleted} unapplied"


def test_readyz_says_the_broker_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setitem(app.conf, "broker_url", f"redis://127.0.0.1:{port}/0")
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "broker": "unavailable"}


def test_probes_are_not_redirected_to_https(settings: Any) -> None:
    """Load balancers probe the process itself over plain HTTP, even with SECURE_SSL_REDIRECT on."""
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301
