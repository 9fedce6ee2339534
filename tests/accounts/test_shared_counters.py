"""Throttle counters and lockout counts are one store for every process (issue 12 §9).

Each check runs in two separate Python processes, as two gunicorn workers would:
the second must see what the first counted. With a per-process cache (the old
default) the second process starts from zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("BYOK_TEST_REDIS_URL", "redis://127.0.0.1:6379")

# One worker process: three download requests by one user against a 3/min limit.
WORKER = """
import json, sys
import django
django.setup()
from django.test import RequestFactory
from rest_framework.request import Request
from byok_portal.api import ScopedThrottle
from django.conf import settings
settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["download"] = "3/min"
from rest_framework.settings import api_settings
api_settings.reload()

class User:
    is_authenticated = True
    pk = int(sys.argv[1])

class View:
    throttle_scope = "download"

allowed = 0
for _ in range(3):
    request = Request(RequestFactory().post("/api/v1/keys/x/download/"))
    request.user = User()
    allowed += ScopedThrottle().allow_request(request, View())
print(json.dumps({"allowed": allowed, "backend": settings.CACHES["default"]["BACKEND"]}))
"""


def _worker(cache_url: str | None, user_id: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "CACHE_URL"}
    env |= {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    db = connection.settings_dict
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    if cache_url is not None:
        env["CACHE_URL"] = cache_url
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(user_id)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the worker processes must share the test database")


@pytest.mark.django_db(transaction=True)
def test_the_default_production_cache_is_shared_by_processes() -> None:
    _needs_postgres()
    user_id = uuid.uuid4().int % 10**9
    first = _worker(None, user_id)
    assert first == {"allowed": 3, "backend": "django.core.cache.backends.db.DatabaseCache"}
    second = _worker(None, user_id)
    assert second["allowed"] == 0, "the second process must see the first one's three requests"


@pytest.mark.django_db(transaction=True)
def test_a_redis_cache_is_shared_by_processes() -> None:
    _needs_postgres()
    url = f"{REDIS_URL}/9"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if IN_CI:
            raise
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    try:
        user_id = uuid.uuid4().int % 10**9
        assert _worker(url, user_id) == {"allowed": 3, "backend": "django.core.cache.backends.redis.RedisCache"}
        assert _worker(url, user_id)["allowed"] == 0
    finally:
        client.flushdb()
        client.close()


def test_a_per_process_cache_is_refused_outside_debug_mode() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "CACHE_URL": "locmem://"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CACHE_URL='locmem://'" in done.stderr


# One worker process: ``count`` failed password logins for one (account, address) pair,
# then whether that pair is locked, as django-axes sees it in this process.
LOGIN_WORKER = """
import json, sys
import django
django.setup()
from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth import authenticate
from django.test import RequestFactory
username, count = sys.argv[1], int(sys.argv[2])
def request():
    return RequestFactory().post("/accounts/login/", {"username": username}, REMOTE_ADDR="203.0.113.9")
for _ in range(count):
    authenticate(request(), username=username, password="wrong password")
print(json.dumps({"locked": AxesProxyHandler.is_locked(request(), {"username": username})}))
"""


@pytest.mark.django_db(transaction=True)
def test_lockout_counts_are_shared_by_processes(settings: Any) -> None:
    _needs_postgres()
    username = f"user-{uuid.uuid4().hex[:8]}"
    limit = settings.AXES_FAILURE_LIMIT

    def worker(count: int) -> bool:
        env = {k: v for k, v in os.environ.items() if k != "CACHE_URL"}
        env |= {"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
        db = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        done = subprocess.run(
            [sys.executable, "-c", LOGIN_WORKER, username, str(count)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return bool(json.loads(done.stdout.strip().splitlines()[-1])["locked"])

    assert worker(limit - 1) is False
    assert worker(1) is True, "the second process's one failure completes the first one's count"
