"""Concurrent operations on one key are serialised by the row lock: exactly one wins (PostgreSQL).

SQLite ignores SELECT ... FOR UPDATE, so these tests need PostgreSQL; CI runs
the suite there and counts a skip as a failure.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from django.db import connection, connections

from audit.chain import verify
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from keys import services
from tests.keys.helpers import sandbox_view

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]
THREADS = 8
ROUNDS = 3


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL=postgres://...)")


def race(attempt: Callable[[], Any]) -> list[str]:
    """Run ``attempt`` in THREADS threads released at once; return each thread's outcome."""
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait()
            attempt()
            outcome = "ok"
        except Exception as exc:  # the outcome is what the test counts
            outcome = type(exc).__name__
        finally:
            connections.close_all()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_eight_threads_racing_the_same_transition_leave_exactly_one_winner(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="raced").key
    for _ in range(ROUNDS):
        transitions: list[tuple[Callable[..., Any], KeyState]] = [
            (services.key_deactivate, KeyState.INACTIVE),
            (services.key_activate, KeyState.ACTIVE),
        ]
        for operation, target in transitions:
            start_seq = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
            outcomes = race(partial(operation, actor=bob, key_id=key.pk))
            assert outcomes == ["ok"] * THREADS  # losers see the new state: a no-op, not an error
            events = AuditEvent.objects.filter(seq__gt=start_seq, key_id=key.pk)
            assert Counter(events.values_list("outcome", flat=True)) == {"success": 1, "noop": THREADS - 1}
            key.refresh_from_db()
            assert key.state == target
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert verify().ok


def test_conflicting_operations_racing_leave_one_consistent_result(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    """Half the threads deactivate, half schedule deletion: whatever order wins, KMS and portal agree."""
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="raced").key
    calls: Iterator[Callable[..., Any]] = iter(
        [services.key_deactivate, services.key_schedule_deletion] * (THREADS // 2)
    )
    lock = threading.Lock()

    def attempt() -> None:
        with lock:
            operation = next(calls)
        operation(actor=bob, key_id=key.pk)

    outcomes = race(attempt)
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DELETION  # deletion is allowed from ACTIVE and INACTIVE alike
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingDeletion"
    # A deactivate that comes after the deletion was scheduled is refused: PENDING_DELETION is not in its row.
    assert set(outcomes) <= {"ok", "InvalidState"}
    events = AuditEvent.objects.filter(key_id=key.pk).exclude(operation="create")
    assert events.count() == THREADS
    assert events.filter(operation="schedule_deletion", outcome="success").count() == 1
    assert verify().ok
