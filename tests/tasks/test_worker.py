"""Tasks executed by real Celery workers on the real Redis, including a worker killed mid-task."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, Operation
from keys import services
from keys.models import Key, KeyMaterial

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RESULT_TIMEOUT = 60


def cleanup_events() -> Counter[str]:
    return Counter(
        str(k) for k in AuditEvent.objects.filter(operation=Operation.CLEANUP).values_list("key_id", flat=True)
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_a_worker_on_redis_cleans_due_keys_and_leaves_the_rest(
    make_due_key: Any, make_key: Any, start_worker: Any, celery_client: Any
) -> None:
    due = [make_due_key() for _ in range(3)]
    waiting = make_due_key(days_ago=-3)
    start_worker()

    result = celery_client.send_task("keys.tasks.cleanup_due_keys").get(timeout=RESULT_TIMEOUT)

    assert result == {"cleaned": 3, "batches": 1}
    assert {k.state for k in Key.objects.filter(pk__in=[k.pk for k in due])} == {KeyState.DELETED}
    assert not KeyMaterial.objects.filter(key__in=due, material_sealed__isnull=False).exists()
    assert Key.objects.get(pk=waiting.pk).state == KeyState.PENDING_DELETION
    assert cleanup_events() == {str(k.pk): 1 for k in due}


def test_a_cleanup_killed_mid_batch_is_redelivered_and_finishes_without_double_effects(
    make_due_key: Any, start_worker: Any, celery_client: Any
) -> None:
    keys = [make_due_key(days_ago=3 - i) for i in range(3)]  # cleaned in this order
    # One key per batch, and each audit write takes a second while the batch's rows are locked.
    first = start_worker(BYOK_CLEANUP_BATCH_SIZE="1", BYOK_TEST_AUDIT_DELAY_SECONDS="1")
    task = celery_client.send_task("keys.tasks.cleanup_due_keys")

    wait_for(lambda: Key.objects.filter(pk=keys[0].pk, state=KeyState.DELETED).exists())
    first.kill()  # now inside the second batch: its key locked and updated, not committed

    assert [Key.objects.get(pk=k.pk).state for k in keys] == [
        KeyState.DELETED,
        KeyState.PENDING_DELETION,
        KeyState.PENDING_DELETION,
    ]
    assert cleanup_events() == {str(keys[0].pk): 1}

    start_worker(BYOK_CLEANUP_BATCH_SIZE="1")
    # acks_late: the message was never acknowledged, so Redis hands it out again.
    assert task.get(timeout=RESULT_TIMEOUT) == {"cleaned": 2, "batches": 2}

    assert {Key.objects.get(pk=k.pk).state for k in keys} == {KeyState.DELETED}
    assert cleanup_events() == {str(k.pk): 1 for k in keys}
    assert verify().ok


def test_a_task_delivered_again_after_it_finished_changes_nothing(
    make_due_key: Any, start_worker: Any, celery_client: Any
) -> None:
    keys = [make_due_key() for _ in range(2)]
    start_worker()
    task_id = "cleanup-delivered-twice"

    first = celery_client.send_task("keys.tasks.cleanup_due_keys", task_id=task_id).get(timeout=RESULT_TIMEOUT)
    events = AuditEvent.objects.count()
    celery_client.AsyncResult(task_id).forget()  # so the second result is the second run's, not a cached one
    again = celery_client.send_task("keys.tasks.cleanup_due_keys", task_id=task_id).get(timeout=RESULT_TIMEOUT)

    assert (first, again) == ({"cleaned": 2, "batches": 1}, {"cleaned": 0, "batches": 0})
    assert AuditEvent.objects.count() == events
    assert cleanup_events() == {str(k.pk): 1 for k in keys}


def test_two_workers_cleaning_at_once_clean_each_key_once(
    make_due_key: Any, start_worker: Any, celery_client: Any
) -> None:
    keys = [make_due_key(days_ago=1 + i / 1000) for i in range(120)]
    start_worker(BYOK_CLEANUP_BATCH_SIZE="7")
    start_worker(BYOK_CLEANUP_BATCH_SIZE="7")

    tasks = [celery_client.send_task("keys.tasks.cleanup_due_keys") for _ in range(2)]
    results = [task.get(timeout=RESULT_TIMEOUT) for task in tasks]

    assert sum(r["cleaned"] for r in results) == len(keys)
    assert cleanup_events() == {str(k.pk): 1 for k in keys}
    assert not AuditEvent.objects.filter(operation=Operation.CLEANUP).exclude(outcome="success").exists()


def test_reconcile_all_fans_out_per_keystore_and_records_drift_once(
    people: Any, keystore: Any, backdoor: Any, start_worker: Any, celery_client: Any
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    backdoor(keystore).disable_key(KeyId=key.kms_key_id)
    start_worker()

    def reconcile_events() -> int:
        return AuditEvent.objects.filter(operation=Operation.RECONCILE, key_id=key.pk).count()

    fan_out = celery_client.send_task("keys.tasks.reconcile_all").get(timeout=RESULT_TIMEOUT)
    assert fan_out == {"keystores": 1, "orphans_resolved": 0}
    wait_for(lambda: reconcile_events() == 1)
    key.refresh_from_db()
    assert key.kms_state == "DISABLED"
    assert [d for d in key.drift if "disabled in AWS" in d]

    checked_at = key.kms_checked_at
    celery_client.send_task("keys.tasks.reconcile_all").get(timeout=RESULT_TIMEOUT)
    wait_for(lambda: Key.objects.get(pk=key.pk).kms_checked_at != checked_at)
    assert reconcile_events() == 1
