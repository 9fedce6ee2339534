"""Issue 12 item 7: background work is recovered on the time scale of the work, not of Redis' one-hour default.

Real Celery workers on the real Redis. A task stops taking new batches after its
time budget and hands the rest to a new task, and the broker's visibility timeout
is derived from the task time limit, so a worker killed mid-task has its message
handed out again within that time.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings

from byok_portal.vocabulary import KeyState
from keys.models import Key
from tests.tasks.test_worker import RESULT_TIMEOUT, cleanup_events, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_the_visibility_timeout_outlasts_the_longest_task_and_no_more() -> None:
    """As configured for production (no override): a running task is never handed out twice, a killed one soon."""
    visibility_timeout = settings.CELERY_VISIBILITY_TIMEOUT
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == visibility_timeout
    assert settings.CELERY_TASK_TIME_LIMIT < visibility_timeout <= 2 * settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT
    assert settings.BYOK_TASK_BUDGET_SECONDS < settings.CELERY_TASK_SOFT_TIME_LIMIT


def test_a_long_cleanup_stops_at_its_budget_and_a_new_task_finishes_it(
    make_due_key: Any, start_worker: Any, celery_client: Any
) -> None:
    keys = [make_due_key(days_ago=6 - i) for i in range(6)]
    # One key per batch, each batch's audit write takes 0.4 s: the 1 s budget ends after a few batches.
    start_worker(BYOK_CLEANUP_BATCH_SIZE="1", BYOK_TEST_AUDIT_DELAY_SECONDS="0.4", BYOK_TASK_BUDGET_SECONDS="1")

    first = celery_client.send_task("keys.tasks.cleanup_due_keys").get(timeout=RESULT_TIMEOUT)

    assert 1 <= first["cleaned"] < len(keys)
    wait_for(lambda: not Key.objects.filter(pk__in=[k.pk for k in keys]).exclude(state=KeyState.DELETED).exists())
    assert cleanup_events() == {str(k.pk): 1 for k in keys}


def test_a_worker_killed_mid_task_is_replaced_within_the_derived_visibility_timeout(
    make_due_key: Any, start_worker: Any, celery_client: Any
) -> None:
    keys = [make_due_key(days_ago=3 - i) for i in range(3)]
    # No CELERY_VISIBILITY_TIMEOUT: the broker derives it from the task time limit (4 s -> 5 s).
    env = {"CELERY_VISIBILITY_TIMEOUT": "", "BYOK_TASK_TIME_LIMIT": "4"}
    first = start_worker(BYOK_CLEANUP_BATCH_SIZE="1", BYOK_TEST_AUDIT_DELAY_SECONDS="1", **env)
    task = celery_client.send_task("keys.tasks.cleanup_due_keys")
    wait_for(lambda: Key.objects.filter(pk=keys[0].pk, state=KeyState.DELETED).exists())
    first.kill()
    killed_at = time.monotonic()

    start_worker(BYOK_CLEANUP_BATCH_SIZE="1", **env)
    assert task.get(timeout=RESULT_TIMEOUT)["cleaned"] == 2
    # Handed out again after ~5 s (plus the test broker's 1 s sweep), not after an hour.
    assert time.monotonic() - killed_at < 20
    assert {Key.objects.get(pk=k.pk).state for k in keys} == {KeyState.DELETED}
    assert cleanup_events() == {str(k.pk): 1 for k in keys}


def test_a_keystore_chunk_ends_at_its_time_budget_and_the_next_goes_on_from_there(people: Any, keystore: Any) -> None:
    from accounts.identity import Actor
    from keys import services
    from keys.jobs import reconcile

    keys = sorted(
        (
            services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name=f"k{n}").key
            for n in range(3)
        ),
        key=lambda key: key.pk,
    )
    actor = Actor.system("reconcile")

    # A budget already spent: the chunk stops after its first key, and says where to go on.
    summary, resume = reconcile.reconcile_keystore(keystore.pk, actor=actor, limit=200, until=time.monotonic())
    assert (summary.checked, resume) == (1, keys[0].pk)
    summary, resume = reconcile.reconcile_keystore(keystore.pk, actor=actor, after=resume, limit=200)
    assert (summary.checked, resume) == (2, None)
    assert all(Key.objects.get(pk=key.pk).kms_checked_at for key in keys)
