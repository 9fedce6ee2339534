"""Issue 12 item 7: a creation's journal row is recovered as soon as its creator is gone, never while it works.

The lease is a PostgreSQL session lock held by the creating process: a process
that dies (or loses its database connection) drops it at once, so reconciliation
no longer waits 15 minutes; a slow but living creation keeps it however long
AWS makes it wait.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal import aws
from keys import services
from keys.models import PendingCreation
from tests.keys.helpers import live_portal_kms_keys

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

KEY_ID = "0f0e0d0c-0b0a-4000-8000-0000000000c1"


@pytest.fixture
def other_session() -> Iterator[psycopg.Connection[Any]]:
    """A second database session: the creating process, as seen from reconciliation's."""
    if connection.vendor != "postgresql":
        pytest.skip("the lease is a PostgreSQL session lock")
    db = connection.settings_dict
    session = psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
        autocommit=True,
    )
    yield session
    session.close()


def leftover_creation(keystore: Any, *, age: dt.timedelta) -> str:
    """What a creation leaves after CreateKey: its journal row and a tagged KMS key."""
    journal = PendingCreation.objects.create(key_id=KEY_ID, keystore=keystore, operation="create")
    PendingCreation.objects.filter(pk=journal.pk).update(started_at=journal.started_at - age)
    return aws.kms_for(keystore).create_external_key(description="half", tags={settings.BYOK_TAG_KEY: KEY_ID})


def _wait_until_gone(backend_pid: int) -> None:
    """PostgreSQL ends a backend (and drops its locks) a moment after its client hangs up, not at once."""
    with connection.cursor() as cursor:
        for _ in range(200):
            # Statistics views are a snapshot per transaction (and a test runs in one): take a fresh one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend_pid])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.025)
    raise AssertionError(f"backend {backend_pid} still runs 5 s after its client closed")


def recover() -> int:
    return services.recover_pending_creations(actor=Actor.system("reconcile"))


def test_a_creation_whose_process_died_a_moment_ago_is_recovered_at_once(
    people: Any, keystore: Any, aws_sandbox: str, other_session: Any
) -> None:
    orphan = leftover_creation(keystore, age=dt.timedelta(seconds=5))
    assert recover() == 1
    assert orphan not in live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)
    assert not PendingCreation.objects.exists()
    assert AuditEvent.objects.get(operation="reconcile", reason="orphan_removed").details["kms_keys"] == [orphan]


def test_a_creation_still_running_is_left_alone_however_long_it_takes(
    people: Any, keystore: Any, aws_sandbox: str, other_session: Any
) -> None:
    arn = leftover_creation(keystore, age=dt.timedelta(hours=2))
    other_session.execute("SELECT pg_advisory_lock(%s)", [services.creation_lock_id(KEY_ID)])

    assert recover() == 0
    assert arn in live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)
    assert PendingCreation.objects.exists()

    creator = other_session.info.backend_pid
    other_session.close()  # the creating process dies: its lease goes with its session
    _wait_until_gone(creator)
    assert recover() == 1
    assert arn not in live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)


def test_a_creation_holds_its_lease_while_it_talks_to_kms(
    people: Any, keystore: Any, aws_sandbox: str, other_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen from another session during CreateKey, the new key's lease is taken; afterwards it is free."""
    from byok_portal.aws import KmsSession

    seen: list[bool] = []
    real = KmsSession.create_external_key

    def create(self: KmsSession, *, description: str, tags: dict[str, str], **spec: Any) -> str:
        lock = services.creation_lock_id(tags[settings.BYOK_TAG_KEY])
        taken = other_session.execute("SELECT pg_try_advisory_lock(%s)", [lock]).fetchone()[0]
        seen.append(not taken)
        if taken:
            other_session.execute("SELECT pg_advisory_unlock(%s)", [lock])
        return real(self, description=description, tags=tags, **spec)

    monkeypatch.setattr(KmsSession, "create_external_key", create)
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key
    assert seen == [True]
    lock = services.creation_lock_id(key.pk)
    assert other_session.execute("SELECT pg_try_advisory_lock(%s)", [lock]).fetchone()[0] is True
