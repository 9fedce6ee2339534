"""A covered operation racing another operation on the same key never runs without its approvals.

The gate reads the key without its row lock. Here an activation (not covered) holds the
lock while AWS answers its ImportKeyMaterial, slowed on the wire by the fault proxy; a
covered operation arriving meanwhile finds the key INACTIVE — a no-op or a refusal, so
the gate lets it through — and waits for the lock. When it gets the lock the key is
ACTIVE: it must ask for approvals then, not act. Real threads, real row locks
(PostgreSQL), real sandbox AWS.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections

from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from byok_portal.dual_control import ApprovalPending
from byok_portal.vocabulary import Operation
from keys.operations import REGISTRY
from tests.approvals.conftest import set_policy
from tests.keys.helpers import sandbox_view

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL=postgres://...)")


def _someone_waits_for_a_row_lock(timeout: float = 20.0) -> bool:
    """Whether another session of this database is (or comes to be, within ``timeout``) waiting for a lock."""
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


@pytest.mark.parametrize(
    ("operation", "group", "data"),
    [
        (Operation.DEACTIVATE, "disable", None),  # a no-op on the INACTIVE key the gate saw
        (Operation.ROTATE, "change_material", None),  # refused on INACTIVE: the gate left the 409 to the service
        (Operation.RENEW, "change_material", {"name": "renewed"}),
    ],
)
def test_a_covered_operation_that_waited_behind_an_activation_asks_for_approval(
    people: Any, keystore: Any, new_key: Any, proxy: Any, operation: Operation, group: str, data: Any
) -> None:
    key = new_key()
    REGISTRY[Operation.DEACTIVATE].run(people.actor(people.bob), key.pk)
    set_policy(keystore, **{group: 1})
    before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    in_kms, lock_awaited = threading.Event(), threading.Event()

    def hold_the_answer() -> None:
        # AWS imported the material; the activation still holds the key's row lock and waits for its answer.
        in_kms.set()
        lock_awaited.wait(30)

    proxy.when_answered("ImportKeyMaterial", hold_the_answer)
    outcomes: dict[str, Any] = {}

    def run(name: str, who: Any, op: Operation, body: Any) -> None:
        try:
            outcomes[name] = REGISTRY[op].run(people.actor(who), key.pk, body).outcome
        except Exception as exc:  # the outcome is what the test checks
            outcomes[name] = exc
        finally:
            connections.close_all()

    activate = threading.Thread(target=run, args=("activate", people.carol, Operation.ACTIVATE, None))
    covered = threading.Thread(target=run, args=("covered", people.bob, operation, data))
    activate.start()
    assert in_kms.wait(30), "the activation never reached ImportKeyMaterial"
    covered.start()
    # The covered operation passed the gate (the key was INACTIVE) and now waits for the row lock.
    waited = _someone_waits_for_a_row_lock()
    lock_awaited.set()
    activate.join(60)
    covered.join(60)

    assert waited, "the covered operation never waited for the key's row lock"
    assert str(outcomes["activate"]) == "success"
    assert isinstance(outcomes["covered"], ApprovalPending), outcomes["covered"]
    request = ApprovalRequest.objects.get()
    assert (request.operation, request.state, request.requester) == (
        operation.value,
        "PENDING",
        people.actor(people.bob).identity,
    )
    key.refresh_from_db()
    assert key.state == "ACTIVE"
    assert sandbox_view(proxy.upstream, key)["key_state"] == "Enabled"
    assert not AuditEvent.objects.filter(seq__gt=before, operation=operation.value, outcome="success").exists()
    # Nothing was staged or created for the operation that did not run.
    assert key.materials.count() == 1
    assert not type(key).objects.filter(replaces=key).exists()
