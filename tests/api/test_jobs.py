"""``/api/v1/jobs/`` (SPEC §16): bulk jobs through the registry's one dispatch, per-key results, cancel.

The lanes are run here with the workers' own code (``jobs.services.run_lane``); the worker
tests (tests/tasks/test_bulk_jobs.py) run them on real Celery workers.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from approvals import services as approvals
from approvals.models import ApprovalRequest
from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from jobs import services
from jobs.models import ItemState, Job, JobItem, JobState
from keys.models import Key
from keys.services import key_create
from keystores.models import Role
from keystores.services import membership_set
from tests.approvals.conftest import set_policy
from tests.tasks.test_bulk_jobs import second_keystore  # noqa: F401 - the second keystore those tests use too
from tests.web import verified_client
from tokens.services import token_create

pytestmark = pytest.mark.django_db


def _keys(people: Any, keystore: Any, count: int) -> list[Key]:
    return [key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name=f"k{i}").key for i in range(count)]


def _run(job_id: str) -> None:
    job = services.Job.objects.get(pk=job_id)
    for lane in set(job.items.values_list("lane", flat=True)):
        services.run_lane(job.pk, lane, until=time.monotonic() + 60, limit=1000)


def test_a_bulk_deactivation_runs_every_key_through_the_operation(
    api_as: Any, people: Any, keystore: Any, settings: Any
) -> None:
    keys = _keys(people, keystore, 3)
    settings.BYOK_KMS_QUOTA_SHARE = 0.5  # DisableKey at 2.5/s: 0.4 s per key
    api = api_as(people.bob)
    job = api.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys[:2]]}, expect=201)
    assert (job.data["state"], job.data["total"], job.data["done"], job.data["failed"]) == ("QUEUED", 2, 0, 0)
    assert job.data["eta_seconds"] == 0.8

    _run(job.data["id"])
    done = api.get(f"/api/v1/jobs/{job.data['id']}/", expect=200).data
    assert (done["state"], done["done"], done["failed"], done["eta_seconds"]) == ("DONE", 2, 0, None)
    assert [(r["key"], r["outcome"]) for r in done["results"]] == [(str(k.pk), "SUCCESS") for k in keys[:2]]
    assert [Key.objects.get(pk=k.pk).state for k in keys] == [KeyState.INACTIVE, KeyState.INACTIVE, KeyState.ACTIVE]
    # Each key's own event names the person who asked; the job has its own.
    deactivations = AuditEvent.objects.filter(operation="deactivate", outcome="success")
    assert {(e.key_id, e.actor_sub) for e in deactivations} == {(k.pk, people.bob.identity[1]) for k in keys[:2]}
    assert AuditEvent.objects.get(operation="bulk_job").details["total"] == 2


def test_a_filter_selects_the_keys_and_refusals_are_per_key(api_as: Any, people: Any, keystore: Any) -> None:
    keys = _keys(people, keystore, 2)
    body = {"operation": "deactivate", "filter": {"keystore": str(keystore.pk), "state": "ACTIVE"}}
    job = api_as(people.dan).post("/api/v1/jobs/", body, expect=201).data  # dan is an auditor
    assert job["total"] == 2
    _run(job["id"])
    after = api_as(people.dan).get(f"/api/v1/jobs/{job['id']}/", expect=200).data
    assert (after["state"], after["failed"]) == ("FAILED", 2)
    assert {r["outcome"] for r in after["results"]} == {"permission_denied"}
    assert {Key.objects.get(pk=k.pk).state for k in keys} == {KeyState.ACTIVE}


def test_a_create_job_creates_each_name_in_each_keystore(api_as: Any, people: Any, keystore: Any) -> None:
    body = {"operation": "create", "keystores": [str(keystore.pk)], "names": ["a", "b"], "parameters": {"tags": {}}}
    job = api_as(people.bob).post("/api/v1/jobs/", body, expect=201).data
    _run(job["id"])
    assert sorted(Key.objects.filter(keystore=keystore).values_list("name", flat=True)) == ["a", "b"]
    results = api_as(people.bob).get(f"/api/v1/jobs/{job['id']}/", expect=200).data["results"]
    assert {r["key"] for r in results} == {str(k) for k in Key.objects.values_list("pk", flat=True)}


def test_cancel_leaves_the_keys_not_started(api_as: Any, people: Any, keystore: Any) -> None:
    keys = _keys(people, keystore, 2)
    api = api_as(people.bob)
    job = api.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys]}, expect=201).data
    assert api_as(people.carol).post(f"/api/v1/jobs/{job['id']}/cancel/", expect=404).data["code"] == "not_found"
    cancelled = api.post(f"/api/v1/jobs/{job['id']}/cancel/", expect=200).data
    assert (cancelled["state"], {r["state"] for r in cancelled["results"]}) == ("CANCELLED", {"CANCELLED"})
    _run(job["id"])
    assert {Key.objects.get(pk=k.pk).state for k in keys} == {KeyState.ACTIVE}
    again = api.post(f"/api/v1/jobs/{job['id']}/cancel/", expect=409).data
    assert (again["code"], again["state"]) == ("invalid_state", "CANCELLED")
    assert AuditEvent.objects.filter(operation="cancel_bulk_job").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"operation": "explode", "keys": []}, "operation"),
        ({"operation": "download", "keys": []}, "operation"),
        ({"operation": "deactivate"}, "keys"),
        ({"operation": "deactivate", "keys": [], "filter": {}}, "keys"),
        ({"operation": "deactivate", "keys": ["5b0c3c43-4c62-4a8e-9a0b-6a3f3c1f9c11"]}, "keys"),
        ({"operation": "deactivate", "filter": {"state": "SLEEPY"}}, "filter.state"),
        # Unknown names and non-string values would be ignored by the filter set: every key.
        ({"operation": "deactivate", "filter": {"stat": "ACTIVE"}}, "Unknown filter(s): stat"),
        ({"operation": "deactivate", "filter": {"state": ["ACTIVE"]}}, "as a string: state"),
        (
            {"operation": "schedule_deletion", "filter": {}, "parameters": {"pending_window_days": 3}},
            "pending_window_days",
        ),
        ({"operation": "create", "keystores": [], "names": ["a", "a"]}, "names"),
    ],
)
def test_bad_requests_name_the_field(api_as: Any, people: Any, keystore: Any, body: dict[str, Any], field: str) -> None:
    _keys(people, keystore, 1)
    refused = api_as(people.bob).post("/api/v1/jobs/", body, expect=400).data
    assert field in str(refused)


def test_a_job_costs_the_same_queries_however_many_keys(api_as: Any, people: Any, keystore: Any) -> None:
    api = api_as(people.bob)
    keys = _keys(people, keystore, 4)
    small = api.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys[:1]]}).data
    large = api.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys]}).data
    for job in (small, large):
        _run(job["id"])
    counts = []
    for job in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert len(api.get(f"/api/v1/jobs/{job['id']}/", expect=200).data["results"]) == job["total"]
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- who reaches a job ------------------------------------------------------------------


@pytest.fixture
def cards(second_keystore: Any) -> Any:  # noqa: F811 - uses the imported fixture
    """A second keystore, in its own account: alice admin, bob custodian (carol has no role)."""
    return second_keystore


def _job(people: Any, keys: list[Key], operation: str = "deactivate", **parameters: Any) -> Job:
    request = services.JobRequest(operation=operation, keys=[k.pk for k in keys], parameters=parameters)
    return services.job_create(actor=people.actor(people.bob), request=request)


def _token_client(people: Any, user: Any, keystores: list[Any]) -> APIClient:
    made = token_create(
        actor=people.actor(user), name="ci", scope="write", expires_in_days=30, keystore_ids=[k.pk for k in keystores]
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {made.secret}")
    return client


def test_a_token_limited_to_one_keystore_knows_no_job_touching_another(people: Any, keystore: Any, cards: Any) -> None:
    payments_key, cards_key = _keys(people, keystore, 1)[0], _keys(people, cards, 1)[0]
    on_payments, on_cards, on_both = (
        _job(people, [payments_key]),
        _job(people, [cards_key]),
        _job(people, [payments_key, cards_key]),
    )
    client = _token_client(people, people.bob, [keystore])

    assert client.get(f"/api/v1/keys/{cards_key.pk}/").status_code == 404
    assert client.get(f"/api/v1/jobs/{on_payments.pk}/").status_code == 200
    for job in (on_cards, on_both):
        # As unknown as the key in Cards: neither its results nor a way to stop it.
        assert client.get(f"/api/v1/jobs/{job.pk}/").json()["code"] == "not_found"
        assert client.post(f"/api/v1/jobs/{job.pk}/cancel/", format="json").status_code == 404
        assert Job.objects.get(pk=job.pk).state == JobState.QUEUED
    # The same person with an unlimited token (or a session) reaches all three.
    unlimited = _token_client(people, people.bob, [])
    assert {unlimited.get(f"/api/v1/jobs/{j.pk}/").status_code for j in (on_payments, on_cards, on_both)} == {200}
    assert unlimited.post(f"/api/v1/jobs/{on_both.pk}/cancel/", format="json").json()["state"] == "CANCELLED"


def test_a_disabled_requesters_job_leaves_the_rest_of_its_keys_alone(api_as: Any, people: Any, keystore: Any) -> None:
    keys = _keys(people, keystore, 3)
    job = _job(people, keys, "schedule_deletion", pending_window_days=7)
    services.run_lane(job.pk, keystore.pk, until=time.monotonic() + 60, limit=1)  # one key before the offboarding
    people.bob.is_active = False
    people.bob.save(update_fields=["is_active"])
    _run(str(job.pk))

    job.refresh_from_db()
    assert (job.state, job.done, job.failed) == (JobState.DONE, 1, 2)
    ends = list(job.items.order_by("position").values_list("state", "outcome"))
    assert ends == [(ItemState.DONE, "SUCCESS")] + [(ItemState.FAILED, "account_disabled")] * 2
    states = [Key.objects.get(pk=k.pk).state for k in keys]
    assert states == [KeyState.PENDING_DELETION, KeyState.ACTIVE, KeyState.ACTIVE]
    assert AuditEvent.objects.filter(operation="schedule_deletion").count() == 1


@pytest.mark.parametrize("canceller", ["alice", "root"])
def test_an_admin_of_its_keystores_or_a_superuser_can_cancel_someone_elses_job(
    api_as: Any, people: Any, keystore: Any, canceller: str
) -> None:
    job = _job(people, _keys(people, keystore, 2))
    people.bob.is_active = False
    people.bob.save(update_fields=["is_active"])
    assert api_as(people.carol).post(f"/api/v1/jobs/{job.pk}/cancel/", expect=404).data["code"] == "not_found"
    assert api_as(people.dan).get(f"/api/v1/jobs/{job.pk}/", expect=404)  # an auditor: not theirs to stop

    who = getattr(people, canceller)
    assert api_as(who).get(f"/api/v1/jobs/{job.pk}/", expect=200).data["requester_name"] == "bob"
    cancelled = api_as(who).post(f"/api/v1/jobs/{job.pk}/cancel/", expect=200).data
    assert (cancelled["state"], cancelled["cancelled"]) == ("CANCELLED", 2)
    event = AuditEvent.objects.get(operation="cancel_bulk_job")
    assert (event.actor_sub, event.details["requester"]["sub"]) == (who.identity[1], people.bob.identity[1])


def test_an_admin_of_only_some_of_its_keystores_cannot_cancel_it(
    api_as: Any, people: Any, keystore: Any, cards: Any
) -> None:
    membership_set(actor=people.actor(people.root), keystore_id=cards.pk, user=people.alice, role=Role.CUSTODIAN)
    job = _job(people, [_keys(people, keystore, 1)[0], _keys(people, cards, 1)[0]])
    api_as(people.alice).post(f"/api/v1/jobs/{job.pk}/cancel/", expect=404)
    api_as(people.root).post(f"/api/v1/jobs/{job.pk}/cancel/", expect=200)


# --- under an approval policy --------------------------------------------------------------


def test_keys_held_by_an_approval_policy_await_it_and_the_job_says_so(api_as: Any, people: Any, keystore: Any) -> None:
    keys = _keys(people, keystore, 3)
    set_policy(keystore, disable=1)
    bob = api_as(people.bob)
    job = bob.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys]}, expect=201).data
    _run(job["id"])

    after = bob.get(f"/api/v1/jobs/{job['id']}/", expect=200).data
    counts = ("state", "done", "failed", "awaiting_approval", "settled", "eta_seconds")
    assert tuple(after[c] for c in counts) == ("DONE", 0, 0, 3, 3, None)
    requests = {str(r.key_id): str(r.pk) for r in ApprovalRequest.objects.filter(state="PENDING")}
    assert len(requests) == 3
    assert {r["key"]: r["approval_request"] for r in after["results"]} == requests
    assert {(r["state"], r["outcome"], r["approval_state"]) for r in after["results"]} == {
        ("AWAITING_APPROVAL", "approval_pending", "PENDING")
    }
    assert {Key.objects.get(pk=k.pk).state for k in keys} == {KeyState.ACTIVE}

    # Once approved, the request runs the operation; the job's result follows the request.
    first = requests[str(keys[0].pk)]
    approvals.approve(actor=people.actor(people.carol), request_id=first)
    approvals.execute(ApprovalRequest.objects.get(pk=first).pk)
    assert Key.objects.get(pk=keys[0].pk).state == KeyState.INACTIVE
    again = bob.get(f"/api/v1/jobs/{job['id']}/", expect=200).data
    assert {r["key"]: r["approval_state"] for r in again["results"]}[str(keys[0].pk)] == "EXECUTED"
    assert (again["awaiting_approval"], again["approvals"]) == (3, {"EXECUTED": 1, "PENDING": 2})

    page = verified_client(people.bob).get(f"/jobs/{job['id']}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<span data-field="awaiting_approval">3</span> awaiting approval' in html
    assert all(f'href="/approvals/{r}/"' in html for r in requests.values())
    assert "The requests now: 1 executed, 2 pending." in html


# --- the progress poll --------------------------------------------------------------------


def _large_job(people: Any, keystore: Any, total: int, settled: int) -> Job:
    """A job of ``total`` keys (rows only: no KMS), the first ``settled`` of them over, as the workers leave them."""
    job = Job.objects.create(
        operation="deactivate",
        total=total,
        done=settled,
        settled=settled,
        state=JobState.RUNNING,
        requested_by=people.bob,
        requester_iss=people.bob.identity[0],
        requester_sub=people.bob.identity[1],
        requester_name="bob",
    )
    keys = [uuid.uuid4() for _ in range(total)]
    JobItem.objects.bulk_create(
        [
            JobItem(
                job=job,
                position=i,
                lane=keystore.pk,
                key_id=keys[i],
                state=ItemState.DONE if i < settled else ItemState.PENDING,
                outcome="SUCCESS" if i < settled else "",
                settled_seq=i + 1 if i < settled else None,
            )
            for i in range(total)
        ],
        batch_size=2000,
    )
    return job


def test_a_poll_of_a_ten_thousand_key_job_gets_the_counts_and_only_the_new_results(
    api_as: Any, people: Any, keystore: Any, django_assert_num_queries: Any
) -> None:
    job = _large_job(people, keystore, 10_000, settled=5_000)
    api = api_as(people.bob)
    # Session and user (2), the throttle's counter in the database cache (6), then the job's own three: the job
    # (with who may see it), one page of results, the per-lane counts of the ETA.
    with django_assert_num_queries(11) as queries:
        poll = api.get(f"/api/v1/jobs/{job.pk}/?after=4990", expect=200)
    assert len([q for q in queries.captured_queries if "jobs_job" in q["sql"]]) == 3
    body = poll.json()
    assert (body["settled"], body["next_after"], body["more_results"]) == (5_000, 5_000, False)
    assert [r["position"] for r in body["results"]] == list(range(4990, 5000))
    assert len(poll.content) < 8_000, len(poll.content)  # was ~2 MB: every item, every second

    counts_only = api.get(f"/api/v1/jobs/{job.pk}/?after=5000", expect=200)
    assert (counts_only.json()["results"], len(counts_only.content) < 1_000) == ([], True)

    # From the start, a client pages through at most 1,000 results at a time.
    first = api.get(f"/api/v1/jobs/{job.pk}/", expect=200).json()
    assert (len(first["results"]), first["next_after"], first["more_results"]) == (1000, 1000, True)


def test_paging_by_the_cursor_gets_every_result_once_in_the_order_they_ended(
    api_as: Any, people: Any, keystore: Any
) -> None:
    keys = _keys(people, keystore, 5)
    api = api_as(people.bob)
    job = api.post("/api/v1/jobs/", {"operation": "deactivate", "keys": [str(k.pk) for k in keys]}, expect=201).data
    seen: list[dict[str, Any]] = []
    after = 0

    def poll(limit: int = 2) -> dict[str, Any]:
        nonlocal after
        body: dict[str, Any] = api.get(f"/api/v1/jobs/{job['id']}/?after={after}&limit={limit}", expect=200).data
        seen.extend(body["results"])
        after = body["next_after"]
        return body

    services.run_lane(uuid.UUID(job["id"]), keystore.pk, until=time.monotonic() + 60, limit=3)
    assert poll()["more_results"] is True
    assert poll()["more_results"] is False
    api.post(f"/api/v1/jobs/{job['id']}/cancel/", expect=200)  # the last two: cancelled, and numbered too
    while poll()["more_results"]:
        pass
    assert [r["seq"] for r in seen] == [1, 2, 3, 4, 5]
    assert [(r["position"], r["state"]) for r in seen] == [
        (0, "DONE"),
        (1, "DONE"),
        (2, "DONE"),
        (3, "CANCELLED"),
        (4, "CANCELLED"),
    ]
    assert "after" in api.get(f"/api/v1/jobs/{job['id']}/?after=-1", expect=400).data
    assert "page" in api.get(f"/api/v1/jobs/{job['id']}/?page=2", expect=400).data
