"""Revocation holds at once in every web process (SPEC §13): no process keeps a token it was shown.

A second portal runs in its own process (``manage.py runserver``, as a second gunicorn worker
would be) on the same database. It accepts a token, the token is revoked through this
process's portal, and the other process refuses it at the very next request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from accounts.identity import Actor
from tokens.services import token_create

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def other_process_portal(live_server: Any) -> Iterator[str]:
    """The portal in another process, on the test database (PostgreSQL: both processes see every commit)."""
    if connection.vendor != "postgresql":
        pytest.skip("the second process must share the test database")
    db = connection.settings_dict
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "CACHE_URL"},
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", "--nothreading", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        server.stderr.read().decode()[-3000:] if server.stderr else "no output"
                    ) from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_revoked_token_is_refused_by_another_process_at_once(
    live_server: Any, other_process_portal: str, people: Any, keystore: Any
) -> None:
    made = token_create(actor=Actor.for_user(people.bob), name="ci", scope="write", expires_in_days=7)
    headers = {"Authorization": f"Bearer {made.secret}"}
    before = httpx.get(f"{other_process_portal}/api/v1/keystores/", headers=headers, timeout=30)
    assert before.status_code == 200, before.text
    assert [k["name"] for k in before.json()["results"]] == ["Payments"]
    # Revoked through this process's portal (with the token itself: a write token may revoke itself).
    owner = httpx.Client(base_url=live_server.url, headers=headers, timeout=30)
    assert owner.delete(f"/api/v1/tokens/{made.token.pk}/").status_code == 204
    # ...and the other process, which accepted it a moment ago, refuses it now.
    after = httpx.get(f"{other_process_portal}/api/v1/keystores/", headers=headers, timeout=30)
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
