"""Fixtures for the background-work tests: keys in any state, KMS changed behind the portal's back,
and real Celery workers on the real Redis.

Workers are separate processes started with the test settings and the *test*
database, so tests that use them need ``django_db(transaction=True)`` (rows must
be committed for another process to see them) and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from byok_portal.vocabulary import KeyState, KmsState
from keys import custody
from keys.models import Key, KeyMaterial

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("BYOK_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (row locks; a worker process must share the test database)")


# --- keys without going through KMS ------------------------------------------------


@pytest.fixture
def make_key(keystore: Any) -> Callable[..., Key]:
    """``make_key(state=..., deletion_date=..., **fields)``: a Key row with sealed material and no KMS key.

    For work that never calls KMS (cleanup, expiry warnings), where creating real
    KMS keys would only make the tests slow.
    """

    def make(**fields: Any) -> Key:
        key_id = uuid.uuid4()
        fields.setdefault("name", f"key-{key_id.hex[:8]}")
        fields.setdefault("state", KeyState.ACTIVE)
        fields.setdefault("kms_key_arn", f"arn:aws:kms:eu-west-1:{keystore.aws_account_id}:key/{uuid.uuid4()}")
        fields.setdefault("kms_state", KmsState.ENABLED)
        material = custody.generate_material()
        try:
            key = Key.objects.create(id=key_id, keystore=keystore, kcv=custody.kcv(material), **fields)
            KeyMaterial.objects.create(
                key=key, version=1, material_sealed=custody.seal(key_id, material, 1), kcv=key.kcv
            )
            return key
        finally:
            custody.wipe(material)

    return make


@pytest.fixture
def make_due_key(make_key: Callable[..., Key]) -> Callable[..., Key]:
    """A key pending deletion whose waiting period ended ``days_ago`` days ago."""

    def make(days_ago: float = 1, **fields: Any) -> Key:
        return make_key(
            state=KeyState.PENDING_DELETION,
            kms_state=KmsState.PENDING_DELETION,
            deletion_date=timezone.now() - dt.timedelta(days=days_ago),
            **fields,
        )

    return make


# --- KMS behind the portal's back --------------------------------------------------


@pytest.fixture
def backdoor(aws_sandbox: str) -> Callable[[Any], Any]:
    """``backdoor(keystore)`` → a boto3 KMS client in the keystore's account, as its owner would use it."""

    def client(keystore: Any) -> Any:
        sts = boto3.client(
            "sts",
            endpoint_url=aws_sandbox,
            region_name=keystore.region,
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
        )
        credentials = sts.assume_role(
            RoleArn=keystore.role_arn, RoleSessionName="someone-else", ExternalId=keystore.external_id
        )["Credentials"]
        return boto3.client(
            "kms",
            endpoint_url=aws_sandbox,
            region_name=keystore.region,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    return client


@pytest.fixture
def purge(aws_sandbox: str) -> Callable[[Key], None]:
    """Make the key's KMS key disappear, as AWS does at the end of a deletion window."""

    def do_purge(key: Key) -> None:
        ks = key.keystore
        url = f"{aws_sandbox}/_sandbox/kms/{ks.aws_account_id}/{ks.region}/keys/{key.kms_key_id}/purge"
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST")) as response:
            assert json.loads(response.read())["purged"] is True

    return do_purge


# --- real Celery workers on real Redis --------------------------------------------


@pytest.fixture
def redis_url(worker_id: str) -> Iterator[str]:
    """An empty Redis database of its own for this test (one per xdist worker), emptied again afterwards."""
    import redis

    index = 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))
    # Databases 11-15, one per worker: two workers sharing one would empty each other's queues.
    assert index < 5, f"xdist worker {worker_id}: Redis databases 11-15 serve at most 5 workers (see the Makefile)"
    url = f"{REDIS_URL}/{11 + index}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


class Worker:
    """One ``celery worker`` process (solo pool: the task runs in the process we kill)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> Worker:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.tasks.worker_app",
                "worker",
                "--pool",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
                "--hostname",
                f"test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=REPO,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill takes everything it started
        )
        log.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited at start:\n{self.log()}")
            with self.log_path.open("rb") as fh:
                fh.seek(start)
                if b" ready." in fh.read():
                    return
            time.sleep(0.1)
        raise AssertionError(f"the worker did not become ready:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, like a node that loses power: no warm shutdown, no ack, no cleanup."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


@pytest.fixture
def worker_env(transactional_db: Any, redis_url: str, aws_sandbox: str) -> dict[str, str]:
    """The environment of a worker that shares this test's database, Redis and sandbox AWS."""
    needs_postgres()
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        # Redelivery of a message whose worker died comes after this many seconds.
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "BYOK_SANDBOX": "true",
        "BYOK_SANDBOX_URL": aws_sandbox,
        "BYOK_AWS_PRINCIPAL_ARN": settings.BYOK_AWS_PRINCIPAL_ARN,
        "BYOK_RECONCILE_KMS_CALLS_PER_SECOND": "0",
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """``start_worker(**env)`` → a running worker; all are stopped at the end of the test."""
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        worker = Worker(worker_env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker.start(**extra_env)

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def celery_client(redis_url: str) -> Iterator[Any]:
    """A Celery app that only sends tasks and reads results, as beat and the web processes do."""
    from celery import Celery

    client = Celery("byok-test-client", broker=redis_url, backend=redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield client
    client.close()


@pytest.fixture
def portal_broker(redis_url: str) -> Iterator[str]:
    """The portal's own Celery app (what the approval hands the request to) sends to this test's Redis."""
    from byok_portal.celery import app

    def use(broker: str) -> None:
        app.conf.update(broker_url=broker)
        # Celery makes its connection pool and producers for the broker of their first use (private, no API).
        app._pool = None  # type: ignore[attr-defined]
        app.amqp._producer_pool = None  # type: ignore[attr-defined]

    previous = app.conf.broker_url
    use(redis_url)
    yield redis_url
    use(previous)
