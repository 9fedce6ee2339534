"""Issue 12 item 6 (second half): KMS work whose database commit was lost is repaired or recorded by reconciliation.

The database really goes away: when the fault proxy in front of the sandbox AWS
sees the operation's last KMS call executed, it terminates the portal's
PostgreSQL session before the answer returns, so the KMS calls have happened and
the portal's commit fails. Nothing in the portal is patched.

Which: create and renew (journal + lease + KMS scan) and cancel deletion (its
journal row) are *repaired* — the next reconciliation run finishes or undoes
them. The other operations are *recorded*: the next run finds the difference,
audits it as drift, and the key page tells custodians to repeat the operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import DatabaseError, connection

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal import aws
from byok_portal.vocabulary import KeyState
from keys import services
from keys.jobs import reconcile
from keys.models import Key, PendingCreation
from tests.faultproxy import FaultProxy, fault_proxy
from tests.keys.helpers import live_portal_kms_keys, sandbox_view

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def proxy(aws_sandbox: str, settings: Any) -> Iterator[FaultProxy]:
    if connection.vendor != "postgresql":
        pytest.skip("terminates a PostgreSQL session")
    with fault_proxy(aws_sandbox) as running:
        settings.BYOK_SANDBOX_URL = running.url
        aws.credential_cache.clear()
        yield running
    aws.credential_cache.clear()


def database_goes_away() -> Callable[[], None]:
    """A callback that terminates this test's (the portal's) database session, from another session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    db = connection.settings_dict

    def terminate() -> None:
        with psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"],
            password=db["PASSWORD"] or None,
            dbname=db["NAME"],
            autocommit=True,
        ) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    return terminate


def reconcile_now() -> None:
    reconcile.reconcile_everything(actor=Actor.system("reconcile"))


def test_a_cancel_deletion_whose_commit_was_lost_is_finished_by_reconciliation(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/k").key
    services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)

    proxy.when_answered("DeleteImportedKeyMaterial", database_goes_away())
    with pytest.raises(DatabaseError):
        services.key_cancel_deletion(actor=bob, key_id=key.pk)
    connection.close()  # the portal's next request opens a new session

    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION  # the portal recorded nothing
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"  # KMS did it all
    assert not AuditEvent.objects.filter(operation="cancel_deletion").exists()

    reconcile_now()

    key.refresh_from_db()
    assert (key.state, key.deletion_date) == (KeyState.INACTIVE, None)
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"
    finished = AuditEvent.objects.get(operation="cancel_deletion", outcome="success")
    assert finished.actor_sub == "reconcile"
    repaired = AuditEvent.objects.get(operation="reconcile", reason="interrupted_operation_finished")
    assert (repaired.state_before, repaired.state_after) == (KeyState.PENDING_DELETION, KeyState.INACTIVE)
    assert not PendingCreation.objects.exists()
    # Finished before keys were compared with KMS: nothing was ever reported as drift.
    assert not AuditEvent.objects.filter(operation="reconcile", key_id=key.pk, reason="drift_found").exists()
    assert key.drift == []


def test_a_cancel_deletion_refused_or_failed_in_aws_leaves_no_journal_behind(
    proxy: FaultProxy, people: Any, keystore: Any
) -> None:
    from byok_portal.aws import AwsError
    from keys.lifecycle import InvalidState

    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    with pytest.raises(InvalidState):
        services.key_cancel_deletion(actor=bob, key_id=key.pk)
    services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7)
    proxy.inject("CancelKeyDeletion", "refuse", times=10)
    with pytest.raises(AwsError):
        services.key_cancel_deletion(actor=bob, key_id=key.pk)
    assert not PendingCreation.objects.exists()


def test_a_create_whose_commit_was_lost_leaves_no_kms_key_after_reconciliation(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    proxy.when_answered("CreateAlias", database_goes_away())
    with pytest.raises(DatabaseError):
        services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/k")
    connection.close()
    assert not Key.objects.exists()

    reconcile_now()

    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == set()
    assert not PendingCreation.objects.exists()
    # The alias is free again: the next create gets it.
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k", alias="alias/k").key
    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/k"]


def test_a_deactivate_whose_commit_was_lost_is_recorded_as_drift_by_reconciliation(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    proxy.when_answered("DeleteImportedKeyMaterial", database_goes_away())
    with pytest.raises(DatabaseError):
        services.key_deactivate(actor=bob, key_id=key.pk)
    connection.close()

    reconcile_now()

    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    event = AuditEvent.objects.get(operation="reconcile", reason="drift_found", key_id=key.pk)
    assert event.details["codes"] == [reconcile.MATERIAL_MISSING]
    services.key_deactivate(actor=bob, key_id=key.pk)  # repeating the operation converges
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"


def database_goes_away_at_the_audit_write() -> Callable[[], None]:
    """A callback that holds the audit chain's head row, waits until the portal blocks on it (its audit write,
    after every KMS call and just before its commit), then terminates the portal's session."""
    import threading
    import time

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    db = connection.settings_dict
    params = {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": db["NAME"],
    }

    def hold_and_terminate() -> None:
        holder = psycopg.connect(**params)
        holder.execute("SELECT 1 FROM audit_audithead FOR UPDATE")

        def terminate_when_blocked() -> None:
            with psycopg.connect(**params, autocommit=True) as admin:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
                    if row and row[0] == "Lock":
                        break
                    time.sleep(0.02)
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            holder.rollback()
            holder.close()

        threading.Thread(target=terminate_when_blocked, daemon=True).start()

    return hold_and_terminate


def test_a_renew_whose_commit_was_lost_gives_the_alias_back_to_the_old_key_at_once(
    proxy: FaultProxy, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k", alias="alias/app").key
    proxy.when_answered("UpdateAlias", database_goes_away_at_the_audit_write())
    with pytest.raises(DatabaseError):
        services.key_renew(actor=bob, key_id=key.pk)
    connection.close()

    key.refresh_from_db()
    assert (key.state, key.alias) == (KeyState.ACTIVE, "alias/app")
    assert sandbox_view(aws_sandbox, key)["aliases"] == ["alias/app"]  # before any reconciliation
    assert live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY) == {key.kms_key_arn}
