"""Committed data: concurrent writers make one chain, and long chains are verified in parallel parts."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from accounts.models import User
from audit import chain
from audit.models import AuditEvent
from byok_portal.vocabulary import Outcome
from keystores.models import Keystore
from tests.audit.conftest import bulk_events, make_keystore, record_event, require_postgresql

pytestmark = pytest.mark.postgres

WRITERS = 8
EVENTS_EACH = 25


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_produce_one_valid_gapless_chain(django_user_model: type[User]) -> None:
    require_postgresql()
    keystore = make_keystore("Shared", "333333333333")
    users = [django_user_model.objects.create_user(username=f"writer{n}") for n in range(WRITERS)]
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(user: User, store: Keystore) -> None:
        try:
            start.wait()
            for n in range(EVENTS_EACH):
                with transaction.atomic():
                    record_event(user, keystore=store, operation="update", outcome=Outcome.SUCCESS, details={"n": n})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(user, keystore)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, WRITERS * EVENTS_EACH + 1))
    writers = set(AuditEvent.objects.values_list("actor_sub", flat=True))
    assert writers == {f"writer{n}" for n in range(WRITERS)}
    result = chain.verify()
    assert result.ok, result.problem
    assert result.events == WRITERS * EVENTS_EACH
    assert chain.current_head() == (result.head_seq, result.head_hash)


@pytest.fixture
def committed_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """60 committed events, verified in 3 parallel parts (the path long chains take)."""
    require_postgresql()
    monkeypatch.setattr(chain, "PARALLEL_FROM", 1)
    monkeypatch.setattr(chain, "VERIFY_PARTS", 3)
    bulk_events(60, keystore=make_keystore("Parts", "444444444444"))


def _tamper_committed(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql)
        finally:
            cursor.execute("SET session_replication_role = origin")


@pytest.mark.django_db(transaction=True)
def test_parallel_verification_accepts_a_sound_chain(committed_chain: None) -> None:
    result = chain.verify()

    assert (result.ok, result.events, result.head_seq) == (True, 60, 60)
    assert result.head_hash == chain.current_head()[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("sql", "first_bad"),
    [
        ("UPDATE audit_auditevent SET error = 'x' WHERE seq IN (35, 50)", 35),
        ("UPDATE audit_auditevent SET error = 'x' WHERE seq = 21", 21),
        ("DELETE FROM audit_auditevent WHERE seq IN (20, 45)", 20),
        ("DELETE FROM audit_auditevent WHERE seq = 41", 41),
        ("DELETE FROM audit_auditevent WHERE seq > 55", 56),
    ],
    ids=["edit-middle", "edit-first-of-part", "delete-last-of-part", "delete-at-boundary", "cut-tail"],
)
def test_parallel_verification_names_the_first_bad_event(committed_chain: None, sql: str, first_bad: int) -> None:
    _tamper_committed(sql)

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == first_bad
    assert result.events == first_bad - 1
