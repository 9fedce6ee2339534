"""The hash chain: what record() writes, and every kind of tampering named by its first bad event."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import DatabaseError, transaction
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, AuditHead
from byok_portal.vocabulary import Outcome
from tests.audit.conftest import Tamper, World, bulk_events, record_event, require_postgresql


def test_it_records_one_event_with_the_copied_in_fields(world: World) -> None:
    event = record_event(
        world.bob,
        key=world.key_b,
        operation="deactivate",
        outcome=Outcome.SUCCESS,
        state_before="ACTIVE",
        state_after="INACTIVE",
        kms_request_ids=["r-1", "", "r-2"],
    )

    event.refresh_from_db()
    assert event.seq == 1
    assert (event.actor_iss, event.actor_sub, event.actor_name) == ("local", "bob", "Bob")
    assert event.source_ip == "192.0.2.10"
    assert event.keystore_id == world.keystore_b.pk
    assert event.keystore_name == "Billing"
    assert (event.key_id, event.key_alias, event.key_arn) == (world.key_b.pk, "alias/billing", world.key_b.kms_key_arn)
    assert (event.state_before, event.state_after) == ("ACTIVE", "INACTIVE")
    assert event.kms_request_ids == ["r-1", "r-2"]
    assert event.hash == chain.event_hash(chain.GENESIS, chain.values_of(event))


def test_each_event_chains_onto_the_previous_one(world: World) -> None:
    first = record_event(world.alice, key=world.key_a)
    second = record_event(world.alice, key=world.key_a, outcome=Outcome.NOOP)

    assert second.seq == first.seq + 1
    assert second.hash == chain.event_hash(first.hash, chain.values_of(second))
    assert chain.current_head() == (2, second.hash)


def test_a_clean_chain_verifies(world: World) -> None:
    bulk_events(30, keystore=world.keystore_a)
    record_event(world.alice, key=world.key_a, details={"price": 0.25, "big": 1e100, "tags": {"b": 1, "a": [1, 2]}})
    # An IPv4-mapped IPv6 address prints differently in PostgreSQL and Python: it must still verify.
    record_event(world.carol, keystore=world.keystore_a, source_ip="::ffff:192.0.2.1", operation="update")

    result = chain.verify()

    assert result.ok
    assert (result.events, result.first_bad) == (32, None)
    assert (result.head_seq, result.head_hash) == chain.current_head()


def test_event_times_never_go_backwards_even_if_a_clock_does(world: World) -> None:
    ahead = timezone.now() + timedelta(minutes=5)
    with time_machine.travel(ahead, tick=False):  # a web process whose clock runs fast
        first = record_event(world.alice, key=world.key_a)

    second = record_event(world.alice, key=world.key_a)
    with time_machine.travel(ahead + timedelta(seconds=1), tick=False):
        third = record_event(world.alice, key=world.key_a)

    assert first.time == second.time == ahead
    assert third.time == ahead + timedelta(seconds=1)
    assert chain.verify().ok


def test_an_empty_trail_verifies(db: None) -> None:
    assert chain.verify() == chain.Verification(True, 0, None, 0, chain.GENESIS)


@pytest.fixture
def ten_events(world: World) -> World:
    require_postgresql()
    bulk_events(10, keystore=world.keystore_a, key=world.key_a)
    assert chain.verify().ok
    return world


@pytest.mark.postgres
def test_it_names_an_edited_event(ten_events: World) -> None:
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET outcome = 'refused' WHERE seq = 4")

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == 4
    assert result.events == 3


@pytest.mark.postgres
def test_it_names_an_edited_json_detail(ten_events: World) -> None:
    with Tamper() as cursor:
        cursor.execute("""UPDATE audit_auditevent SET details = '{"n": 7, "extra": true}' WHERE seq = 7""")

    assert chain.verify().first_bad == 7


@pytest.mark.postgres
def test_it_names_a_deleted_event(ten_events: World) -> None:
    with Tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 5")

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == 5
    assert "missing" in result.problem


@pytest.mark.postgres
def test_it_names_an_inserted_event_renumbered_into_place(ten_events: World) -> None:
    # Shift 6..10 up by one and forge #6 with a hash that cannot be right without the key.
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET seq = seq + 1000 WHERE seq >= 6")
        cursor.execute("UPDATE audit_auditevent SET seq = seq - 999 WHERE seq >= 1006")
        forged = AuditEvent.objects.get(seq=5)
        forged.pk = None
        forged.seq = 6
        forged.operation = "download"
        forged.hash = "f" * 64
        forged.save()

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == 6


@pytest.mark.postgres
def test_it_names_an_event_inserted_with_a_duplicated_valid_hash(ten_events: World) -> None:
    # A copy of a real event (real hash) at a new place still does not chain there.
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET seq = seq + 1000 WHERE seq >= 3")
        cursor.execute("UPDATE audit_auditevent SET seq = seq - 999 WHERE seq >= 1003")
        copy = AuditEvent.objects.get(seq=8)
        copy.pk = None
        copy.seq = 3
        copy.save()

    assert chain.verify().first_bad == 3


@pytest.mark.postgres
def test_it_names_reordered_events(ten_events: World) -> None:
    # Swap the contents (and hashes) of #3 and #4, keeping the numbering gapless.
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET seq = -3 WHERE seq = 3")
        cursor.execute("UPDATE audit_auditevent SET seq = 3 WHERE seq = 4")
        cursor.execute("UPDATE audit_auditevent SET seq = 4 WHERE seq = -3")

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == 3


@pytest.mark.postgres
def test_it_names_an_event_whose_hash_was_recomputed_without_the_key(ten_events: World) -> None:
    event = AuditEvent.objects.get(seq=6)
    previous = AuditEvent.objects.get(seq=5).hash
    with Tamper() as cursor, pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.conf.settings.BYOK_AUDIT_KEY", "a guess")
        values = chain.values_of(event) | {"outcome": "noop"}
        cursor.execute(
            "UPDATE audit_auditevent SET outcome = 'noop', hash = %s WHERE seq = 6",
            [chain.event_hash(previous, values)],
        )

    assert chain.verify().first_bad == 6


@pytest.mark.postgres
def test_a_naively_cut_tail_is_caught_by_the_stored_head(ten_events: World) -> None:
    with Tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq > 7")

    result = chain.verify()

    assert not result.ok
    assert result.first_bad == 8


@pytest.mark.postgres
def test_a_cut_tail_with_a_rewound_head_is_caught_only_by_the_published_head(ten_events: World) -> None:
    published = chain.current_head()
    with Tamper() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq > 7")
        seventh = AuditEvent.objects.get(seq=7).hash
        cursor.execute("UPDATE audit_audithead SET seq = 7, hash = %s", [seventh])

    assert chain.verify().ok, "a shorter chain is still a valid chain"
    result = chain.verify(expected_head=published)
    assert not result.ok
    assert result.first_bad == 8
    assert result.events == 7


@pytest.mark.postgres
def test_a_published_head_that_the_chain_does_not_contain_is_reported(ten_events: World) -> None:
    result = chain.verify(expected_head=(5, "0" * 64))

    assert not result.ok
    assert result.first_bad == 5


@pytest.mark.postgres
def test_a_walk_stopped_early_leaves_the_transaction_usable(ten_events: World) -> None:
    assert not chain.verify(expected_head=(2, "0" * 64)).ok

    assert AuditEvent.objects.count() == 10
    assert record_event(ten_events.alice, keystore=ten_events.keystore_a).seq == 11


@pytest.mark.postgres
def test_a_published_head_older_than_the_chain_verifies(ten_events: World) -> None:
    fifth = AuditEvent.objects.get(seq=5).hash

    assert chain.verify(expected_head=(5, fifth)).ok


@pytest.mark.postgres
def test_the_stored_head_only_moves_forward(ten_events: World) -> None:
    with pytest.raises(DatabaseError, match="may only move forward"), transaction.atomic():
        AuditHead.objects.filter(pk=1).update(seq=7)
