"""On PostgreSQL the database itself keeps the audit trail append-only."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent, AuditHead
from tests.audit.conftest import World, bulk_events, record_event, require_postgresql

pytestmark = pytest.mark.postgres


@pytest.fixture
def trail(world: World) -> World:
    require_postgresql()
    record_event(world.alice, key=world.key_a)
    bulk_events(3, keystore=world.keystore_a)
    return world


def _refused(sql: str) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    return str(caught.value)


def test_it_rejects_update(trail: World) -> None:
    message = _refused("UPDATE audit_auditevent SET outcome = 'noop' WHERE seq = 1")

    assert "append-only: UPDATE on audit_auditevent" in message
    assert AuditEvent.objects.get(seq=1).outcome == "success"


def test_it_rejects_an_orm_update_and_delete(trail: World) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(seq=2).update(error="hidden")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.get(seq=2).delete()


def test_it_rejects_delete(trail: World) -> None:
    assert "append-only: DELETE on audit_auditevent" in _refused("DELETE FROM audit_auditevent")
    assert AuditEvent.objects.count() == 4


def test_it_rejects_even_a_delete_that_matches_nothing(trail: World) -> None:
    assert "append-only" in _refused("DELETE FROM audit_auditevent WHERE seq < 0")


def test_it_rejects_truncate(trail: World) -> None:
    assert "append-only: TRUNCATE on audit_auditevent" in _refused("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 4


def test_it_rejects_deleting_or_truncating_the_head(trail: World) -> None:
    assert "append-only: DELETE on audit_audithead" in _refused("DELETE FROM audit_audithead")
    assert "append-only: TRUNCATE on audit_audithead" in _refused("TRUNCATE audit_audithead")
    assert AuditHead.objects.get().seq == 4


def test_inserts_still_work(trail: World) -> None:
    event = record_event(trail.carol, keystore=trail.keystore_a)

    assert event.seq == 5
