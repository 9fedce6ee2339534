"""The daily cleanup: due keys become DELETED once, in batches, with one audit event each."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys.jobs.cleanup import cleanup_due_keys
from keys.models import Key
from tests.keys.helpers import current_sealed
from tests.tasks.conftest import needs_postgres

CLEANUP = Actor.system("cleanup")


def cleanup_events() -> Counter[str]:
    return Counter(
        str(k) for k in AuditEvent.objects.filter(operation=Operation.CLEANUP).values_list("key_id", flat=True)
    )


@pytest.mark.django_db
def test_it_deletes_due_keys_destroys_their_material_and_audits_each(make_due_key: Any, make_key: Any) -> None:
    due = make_due_key(download_public_key="-----BEGIN PUBLIC KEY-----", download_prepared_by_sub="bob")
    not_yet = make_due_key(days_ago=-1)
    active = make_key()

    summary = cleanup_due_keys(actor=CLEANUP)

    assert (summary.cleaned, summary.batches) == (1, 1)
    due.refresh_from_db()
    assert (due.state, current_sealed(due), due.kms_state) == (KeyState.DELETED, None, KmsState.UNKNOWN)
    assert (due.download_public_key, due.download_prepared_by_sub) == ("", "")
    assert Key.objects.get(pk=not_yet.pk).state == KeyState.PENDING_DELETION
    assert current_sealed(not_yet) is not None
    assert Key.objects.get(pk=active.pk).state == KeyState.ACTIVE
    event = AuditEvent.objects.get(operation=Operation.CLEANUP)
    assert (event.key_id, event.outcome, event.state_before, event.state_after) == (
        due.pk,
        Outcome.SUCCESS,
        KeyState.PENDING_DELETION,
        KeyState.DELETED,
    )
    assert (event.actor_iss, event.actor_sub) == ("system", "cleanup")
    assert event.details == {"deletion_date": due.deletion_date.isoformat()}


@pytest.mark.django_db
def test_a_second_run_finds_nothing_and_writes_nothing(make_due_key: Any) -> None:
    make_due_key()
    cleanup_due_keys(actor=CLEANUP)
    events = AuditEvent.objects.count()

    assert cleanup_due_keys(actor=CLEANUP).cleaned == 0
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_it_works_in_batches_oldest_deletion_date_first(make_due_key: Any) -> None:
    keys = [make_due_key(days_ago=10 - i) for i in range(7)]

    summary = cleanup_due_keys(actor=CLEANUP, batch_size=3)

    assert (summary.cleaned, summary.batches) == (7, 3)
    cleaned_order = list(
        AuditEvent.objects.filter(operation=Operation.CLEANUP).order_by("seq").values_list("key_id", flat=True)
    )
    assert cleaned_order == [k.pk for k in keys]


@pytest.mark.django_db
def test_its_queries_grow_with_batches_not_with_keys(make_due_key: Any) -> None:
    def queries_to_clean(keys: int, batch_size: int) -> tuple[int, int]:
        for _ in range(keys):
            make_due_key()
        with CaptureQueriesContext(connection) as queries:
            summary = cleanup_due_keys(actor=CLEANUP, batch_size=batch_size)
        assert summary.cleaned == keys
        return summary.batches, len(queries.captured_queries)

    few = queries_to_clean(keys=6, batch_size=3)
    many = queries_to_clean(keys=24, batch_size=12)
    assert few[0] == many[0] == 2
    assert few[1] == many[1]  # four times the keys, the same two batches, the same statements

    key_table_selects = 0
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            make_due_key()
        cleanup_due_keys(actor=CLEANUP, batch_size=5)
    for sql in (q["sql"] for q in queries.captured_queries):
        if sql.startswith("SELECT") and '"keys_key"' in sql and "FOR UPDATE" in sql:
            key_table_selects += 1
            assert "SKIP LOCKED" in sql
    assert key_table_selects == 2  # one batch, then the empty one that ends the run


@pytest.mark.django_db
def test_the_management_command_runs_it_once_and_says_what_it_did(make_due_key: Any) -> None:
    make_due_key()
    make_due_key()
    out = StringIO()

    call_command("byok_cleanup", "--batch-size", "1", stdout=out)

    assert out.getvalue().strip() == "Cleaned up 2 key(s) in 2 batch(es)."


@pytest.mark.django_db
def test_the_celery_task_is_a_thin_caller(make_due_key: Any) -> None:
    from keys.tasks import cleanup_due_keys as task

    make_due_key()
    assert task.apply().get() == {"cleaned": 1, "batches": 1}
    assert task.acks_late is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_clean_each_key_exactly_once(make_due_key: Any) -> None:
    needs_postgres()
    keys = [make_due_key(days_ago=1 + i / 1000) for i in range(60)]
    start = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            results.append(cleanup_due_keys(actor=CLEANUP, batch_size=4))
        except BaseException as exc:  # surfaced below; a thread must not swallow it
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    assert sum(r.cleaned for r in results) == len(keys)
    assert cleanup_events() == {str(k.pk): 1 for k in keys}
    assert set(AuditEvent.objects.filter(operation=Operation.CLEANUP).values_list("outcome", flat=True)) == {
        Outcome.SUCCESS
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_key_locked_by_a_lifecycle_operation_is_left_for_the_next_run(make_due_key: Any) -> None:
    needs_postgres()
    busy, free = make_due_key(), make_due_key()
    holding = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            Key.objects.select_for_update().get(pk=busy.pk)
            holding.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    holding.wait(10)
    try:
        first = cleanup_due_keys(actor=CLEANUP)
    finally:
        release.set()
        holder.join(30)

    assert first.cleaned == 1
    assert Key.objects.get(pk=free.pk).state == KeyState.DELETED
    assert Key.objects.get(pk=busy.pk).state == KeyState.PENDING_DELETION
    assert cleanup_due_keys(actor=CLEANUP, now=timezone.now() + dt.timedelta(seconds=1)).cleaned == 1
    assert cleanup_events() == {str(busy.pk): 1, str(free.pk): 1}
