"""The audit API: filters, visibility, cursor pages, exports, verification and head."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit import chain
from audit.models import AuditEvent
from byok_portal.vocabulary import Outcome
from tests.audit.conftest import Tamper, World, bulk_events, record_event, require_postgresql

EVENTS = "/api/v1/audit/events/"
EXPORT = "/api/v1/audit/events/export/"
VERIFY = "/api/v1/audit/verify/"
HEAD = "/api/v1/audit/head/"


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def trail(world: World) -> World:
    """Events in both keystores, one of no keystore, with varied operations and outcomes."""
    record_event(world.carol, key=world.key_a, operation="deactivate", state_before="ACTIVE", state_after="INACTIVE")
    record_event(world.bob, key=world.key_b, operation="activate", outcome=Outcome.REFUSED, reason="invalid_state")
    record_event(
        world.alice, key=world.key_a, operation="download", outcome=Outcome.REFUSED, reason="permission_denied"
    )
    record_event(world.bob, keystore=world.keystore_b, operation="test_connection", outcome=Outcome.FAILED)
    record_event(world.charlie, operation="create_keystore", outcome=Outcome.REFUSED, reason="permission_denied")
    return world


def seqs(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [event["seq"] for event in response.json()["results"]]


def test_it_lists_events_newest_first_in_the_documented_shape(trail: World) -> None:
    response = client_for(trail.root).get(EVENTS)

    assert seqs(response) == [5, 4, 3, 2, 1]
    first = response.json()["results"][-1]
    event = AuditEvent.objects.get(seq=1)
    assert first == {
        "seq": 1,
        "time": event.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"iss": "local", "sub": "carol", "name": "Carol"},
        "source_ip": "192.0.2.10",
        "request_id": event.request_id,
        "operation": "deactivate",
        "keystore": {"id": str(trail.keystore_a.pk), "name": "Payments"},
        "key": {"id": str(trail.key_a.pk), "alias": "alias/payments", "arn": trail.key_a.kms_key_arn},
        "outcome": "success",
        "reason": "",
        "state_before": "ACTIVE",
        "state_after": "INACTIVE",
        "kms_request_ids": [],
        "error": "",
        "details": {},
        "hash": event.hash,
    }
    assert response.json()["results"][0]["keystore"] is None
    assert response.json()["results"][0]["key"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("operation=activate", [2]),
        ("outcome=refused", [5, 3, 2]),
        ("actor=bob", [4, 2]),
        ("actor=Carol", [1]),
        ("outcome=refused&actor=alice", [3]),
    ],
)
def test_it_filters(trail: World, query: str, expected: list[int]) -> None:
    assert seqs(client_for(trail.root).get(f"{EVENTS}?{query}")) == expected


def test_it_filters_by_keystore_and_key(trail: World) -> None:
    root = client_for(trail.root)

    assert seqs(root.get(f"{EVENTS}?keystore={trail.keystore_b.pk}")) == [4, 2]
    assert seqs(root.get(f"{EVENTS}?key={trail.key_a.pk}")) == [3, 1]


def test_it_filters_by_time_range(trail: World) -> None:
    times = dict(AuditEvent.objects.values_list("seq", "time"))
    root = client_for(trail.root)

    since = root.get(EVENTS, {"since": times[3].isoformat()})
    until = root.get(EVENTS, {"until": times[2].isoformat()})
    both = root.get(EVENTS, {"since": times[2].isoformat(), "until": times[4].isoformat()})

    assert seqs(since) == [5, 4, 3]
    assert seqs(until) == [2, 1]
    assert seqs(both) == [4, 3, 2]


@pytest.mark.parametrize(
    ("bound", "value", "expected"),
    [
        # Offsets Python accepts but PostgreSQL does not (beyond ±15:59): found by schemathesis.
        ("since", "0124-09-15T17:36:12+21:09", [5, 4, 3, 2, 1]),
        ("until", "1427-10-19T16:12:20-18:27", []),
        ("since", "0001-01-01T00:00:00+23:59", [5, 4, 3, 2, 1]),
        ("until", "9999-12-31T23:59:59-23:59", [5, 4, 3, 2, 1]),
    ],
)
def test_time_bounds_with_extreme_offsets_are_answered_not_crashed(
    trail: World, bound: str, value: str, expected: list[int]
) -> None:
    assert seqs(client_for(trail.root).get(EVENTS, {bound: value})) == expected


@pytest.mark.parametrize("page_size", ["null", "0", "-1", "501", "2.5"])
def test_a_bad_page_size_is_a_field_error_not_silently_ignored(trail: World, page_size: str) -> None:
    response = client_for(trail.root).get(EVENTS, {"page_size": page_size})
    assert response.status_code == 400
    assert set(response.json()) == {"page_size"}


def test_a_page_size_within_bounds_is_honoured(trail: World) -> None:
    assert seqs(client_for(trail.root).get(EVENTS, {"page_size": "2"})) == [5, 4]


def test_it_rejects_invalid_filters_with_field_errors(trail: World) -> None:
    response = client_for(trail.root).get(f"{EVENTS}?since=yesterday&outcome=maybe&keystore=nope")

    assert response.status_code == 400
    assert set(response.json()) == {"since", "outcome", "keystore"}


def test_an_auditor_sees_the_events_of_their_keystore_only(trail: World) -> None:
    assert seqs(client_for(trail.alice).get(EVENTS)) == [3, 1]
    assert seqs(client_for(trail.carol).get(EVENTS)) == [3, 1]


def test_a_custodian_sees_the_events_of_their_keystore(trail: World) -> None:
    assert seqs(client_for(trail.bob).get(EVENTS)) == [4, 2]


def test_an_outsider_sees_nothing_not_even_their_own_refusal(trail: World) -> None:
    charlie = client_for(trail.charlie)

    assert seqs(charlie.get(EVENTS)) == []
    assert seqs(charlie.get(f"{EVENTS}?keystore={trail.keystore_a.pk}")) == []


def test_filtering_by_another_keystore_shows_nothing(trail: World) -> None:
    assert seqs(client_for(trail.alice).get(f"{EVENTS}?keystore={trail.keystore_b.pk}")) == []


def test_events_stay_readable_after_the_keystore_is_deleted(trail: World) -> None:
    trail.keystore_a.state = "DELETED"
    trail.keystore_a.save()

    assert seqs(client_for(trail.alice).get(EVENTS)) == [3, 1]


def test_anonymous_requests_are_refused(trail: World) -> None:
    for url in (EVENTS, EXPORT, VERIFY, HEAD):
        response = APIClient().get(url)
        assert response.status_code in (401, 403)
        assert response.json()["code"] == "not_authenticated"


def test_it_pages_with_a_cursor(world: World) -> None:
    bulk_events(120, keystore=world.keystore_a)
    alice = client_for(world.alice)

    first = alice.get(f"{EVENTS}?page_size=50")
    second = alice.get(first.json()["next"])
    third = alice.get(second.json()["next"])

    assert seqs(first) == list(range(120, 70, -1))
    assert seqs(second) == list(range(70, 20, -1))
    assert seqs(third) == list(range(20, 0, -1))
    assert third.json()["next"] is None


def _list_queries(client: APIClient) -> int:
    """The list's own queries; the throttle counters' (the shared cache table) are bounded apart."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(EVENTS)
    assert response.status_code == 200
    # The database cache writes in a savepoint of its own.
    counters = [q for q in queries if '"byok_cache"' in q["sql"] or q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(counters) <= 6, "the user throttle: one read, one write"
    return len(queries) - len(counters)


def test_the_list_costs_the_same_queries_at_10_and_200_events(world: World) -> None:
    alice, root = client_for(world.alice), client_for(world.root)
    bulk_events(10, keystore=world.keystore_a, key=world.key_a)
    few = (_list_queries(alice), _list_queries(root))
    bulk_events(190, keystore=world.keystore_a, key=world.key_a)
    many = (_list_queries(alice), _list_queries(root))

    assert few == many
    assert many[0] <= 5, "session, user, the auditor's keystores, the page"


def _export(client: APIClient, query: str) -> Any:
    response = client.get(f"{EXPORT}?{query}")
    assert response.status_code == 200, response.content
    assert response.streaming
    return response


def test_it_exports_json_lines_in_the_api_shape(trail: World) -> None:
    root = client_for(trail.root)
    response = _export(root, "format=jsonl")

    assert response["Content-Type"].startswith("application/jsonl")
    assert "attachment" in response["Content-Disposition"]
    lines = b"".join(response.streaming_content).decode().splitlines()
    exported = [json.loads(line) for line in lines]
    listed = list(reversed(root.get(EVENTS).json()["results"]))
    assert exported == listed


def test_the_export_applies_the_filters_and_visibility(trail: World) -> None:
    lines = b"".join(_export(client_for(trail.bob), "format=jsonl&outcome=refused").streaming_content).splitlines()

    assert [json.loads(line)["seq"] for line in lines] == [2]
    assert b"".join(_export(client_for(trail.charlie), "format=jsonl").streaming_content) == b""


def test_it_exports_csv_with_a_header_and_defused_formulas(trail: World) -> None:
    record_event(trail.carol, key=trail.key_a, error='=HYPERLINK("http://evil")', details={"a": [1, 2]})
    response = _export(client_for(trail.carol), "format=csv")

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["seq"] for row in rows] == ["1", "3", "6"]
    assert rows[0]["keystore_name"] == "Payments"
    assert rows[0]["key_alias"] == "alias/payments"
    assert rows[0]["hash"] == AuditEvent.objects.get(seq=1).hash
    assert rows[2]["error"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(rows[2]["details"]) == {"a": [1, 2]}


def test_the_export_reads_in_batches_with_constant_queries(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from audit import export

    monkeypatch.setattr(export, "BATCH_SIZE", 7)
    bulk_events(30, keystore=world.keystore_a)
    alice = client_for(world.alice)

    for kind, expected_lines in (("jsonl", 30), ("csv", 31)):
        response = _export(alice, f"format={kind}")
        with CaptureQueriesContext(connection) as queries:
            body = b"".join(response.streaming_content).decode()
        assert len(body.splitlines()) == expected_lines
        # The newest seq, then ceil(30 / 7) = 5 batches: no query grows with the trail.
        assert len(queries) == 6, [q["sql"] for q in queries.captured_queries]


def test_it_refuses_an_unknown_export_format(trail: World) -> None:
    response = client_for(trail.root).get(f"{EXPORT}?format=xml")

    assert response.status_code == 400
    assert "format" in response.json()


def test_verify_reports_a_sound_chain_with_its_head(trail: World) -> None:
    response = client_for(trail.alice).get(VERIFY)

    assert response.status_code == 200
    _, digest = chain.current_head()
    assert response.json() == {
        "ok": True,
        "events": 5,
        "first_bad": None,
        "problem": "",
        "head": {"seq": 5, "hash": digest},
    }


def test_verify_names_the_first_bad_event(trail: World) -> None:
    require_postgresql()
    with Tamper() as cursor:
        cursor.execute("UPDATE audit_auditevent SET reason = '' WHERE seq = 2")

    body = client_for(trail.root).get(VERIFY).json()

    assert (body["ok"], body["first_bad"], body["events"]) == (False, 2, 1)


def test_verify_checks_a_published_head(trail: World) -> None:
    seq, digest = chain.current_head()
    root = client_for(trail.root)

    assert root.get(VERIFY, {"expect_seq": str(seq), "expect_hash": digest}).json()["ok"] is True
    wrong = root.get(VERIFY, {"expect_seq": "3", "expect_hash": "a" * 64}).json()
    assert (wrong["ok"], wrong["first_bad"]) == (False, 3)
    assert root.get(VERIFY, {"expect_seq": "3"}).status_code == 400


def test_verify_and_head_need_a_role_somewhere(trail: World) -> None:
    charlie = client_for(trail.charlie)

    for url in (VERIFY, HEAD):
        response = charlie.get(url)
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"


def test_head_is_the_newest_link(trail: World) -> None:
    response = client_for(trail.bob).get(HEAD)

    assert response.json() == {"seq": 5, "hash": AuditEvent.objects.get(seq=5).hash}


def test_the_schema_documents_the_audit_endpoints(db: None) -> None:
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]

    assert {EVENTS, EXPORT, VERIFY, HEAD} <= set(paths)
    assert {"200", "403"} <= set(paths[VERIFY]["get"]["responses"])
    assert set(paths[EXPORT]["get"]["responses"]["200"]["content"]) == {"application/jsonl", "text/csv"}
    params = {p["name"] for p in paths[EVENTS]["get"]["parameters"]}
    assert {"keystore", "key", "actor", "operation", "outcome", "since", "until", "cursor"} <= params


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("since=0001-01-01T00:00:00%2B14:00", [5, 4, 3, 2, 1]),
        ("until=0001-01-01T00:00:00%2B14:00", []),
        ("since=9999-12-31T23:59:59-14:00", []),
        ("until=9999-12-31T23:59:59-14:00", [5, 4, 3, 2, 1]),
    ],
)
def test_time_bounds_beyond_any_event_are_answered_without_error(trail: World, query: str, expected: list[int]) -> None:
    assert seqs(client_for(trail.root).get(f"{EVENTS}?{query}")) == expected


def test_an_invalid_cursor_is_not_found(trail: World) -> None:
    response = client_for(trail.root).get(f"{EVENTS}?cursor=bogus")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
