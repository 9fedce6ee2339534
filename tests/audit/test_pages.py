"""The audit page: same filters and visibility as the API, keyed pages, export links."""

from __future__ import annotations

from typing import Any

from django.test import Client

from byok_portal.vocabulary import Outcome
from tests.audit.conftest import World, bulk_events, record_event
from tests.web import verified_client

PAGE = "/audit/"


def client_for(user: Any) -> Client:
    """Logged in as after the real two-step login (password, then TOTP)."""
    return verified_client(user)


def test_it_needs_a_login(db: None) -> None:
    response = Client().get(PAGE)

    assert response.status_code == 302


def test_a_password_without_the_totp_step_is_not_enough(world: World) -> None:
    client = Client()
    client.force_login(world.alice, backend="django.contrib.auth.backends.ModelBackend")

    response = client.get(PAGE)

    assert response.status_code == 302
    assert "/accounts/" in response["Location"]


def test_it_shows_only_the_users_keystores(world: World) -> None:
    record_event(world.carol, key=world.key_a, operation="deactivate")
    record_event(world.bob, key=world.key_b, operation="activate")

    response = client_for(world.alice).get(PAGE)

    assert response.status_code == 200
    assert [event.seq for event in response.context["events"]] == [1]
    assert b"alias/payments" in response.content
    assert b"alias/billing" not in response.content


def test_it_filters_with_the_shared_filter_set(world: World) -> None:
    record_event(world.carol, key=world.key_a, operation="deactivate")
    record_event(world.carol, key=world.key_a, operation="activate", outcome=Outcome.REFUSED, reason="invalid_state")

    response = client_for(world.carol).get(PAGE, {"outcome": "refused"})

    assert [event.seq for event in response.context["events"]] == [2]
    assert b"outcome=refused&amp;format=csv" in response.content
    assert b"outcome=refused&amp;format=jsonl" in response.content


def test_it_shows_filter_errors_instead_of_events(world: World) -> None:
    record_event(world.carol, key=world.key_a)

    response = client_for(world.carol).get(PAGE, {"since": "last tuesday"})

    assert response.status_code == 200
    assert response.context["events"] == []
    assert response.context["filter"].errors


def test_it_pages_to_older_events_by_sequence_number(world: World) -> None:
    bulk_events(120, keystore=world.keystore_a)
    carol = client_for(world.carol)

    first = carol.get(PAGE)
    second = carol.get(PAGE + "?" + first.context["older_query"])
    third = carol.get(PAGE + "?" + second.context["older_query"])

    assert [e.seq for e in first.context["events"]] == list(range(120, 70, -1))
    assert [e.seq for e in second.context["events"]] == list(range(70, 20, -1))
    assert [e.seq for e in third.context["events"]] == list(range(20, 0, -1))
    assert third.context["older_query"] is None


def test_the_page_costs_the_same_queries_at_10_and_200_events(world: World) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    carol = client_for(world.carol)
    counts = []
    for count in (10, 190):
        bulk_events(count, keystore=world.keystore_a)
        with CaptureQueriesContext(connection) as queries:
            assert carol.get(PAGE).status_code == 200
        counts.append(len(queries))

    assert counts[0] == counts[1]
