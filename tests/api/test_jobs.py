"""``/api/v1/jobs/`` (SPEC §16): bulk jobs through the registry's one dispatch, per-key results, cancel.

The lanes are run here with the workers' own code (``jobs.services.run_lane``); the worker
tests (tests/tasks/test_bulk_jobs.py) run them on real Celery workers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from jobs import services
from keys.models import Key
from keys.services import key_create

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
    counts = []
    for job in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert len(api.get(f"/api/v1/jobs/{job['id']}/", expect=200).data["results"]) == job["total"]
        counts.append(len(queries))
    assert counts[0] == counts[1]
