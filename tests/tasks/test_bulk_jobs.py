"""Bulk jobs on real Celery workers and Redis, with the sandbox enforcing KMS quotas (SPEC §14).

The sandbox runs at 10 × AWS's default rates and the portal takes half of them
(``BYOK_KMS_QUOTA_SHARE=5`` of AWS's defaults), so ``GetParametersForImport`` — one per
created key — allows the portal 1.25 calls per second per account: 25 creates in an
account take 20 s at the quota's pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from audit.models import AuditEvent
from byok_portal import kms_quotas
from jobs import services
from jobs.models import ItemState, Job, JobState
from keys.models import Key
from keystores.models import Role
from keystores.services import keystore_create, membership_set
from tests.conftest import REGION, create_sandbox_role, new_account_id
from tests.quota_log import busiest_window, kms_calls, reset_log, set_quota_scale

SANDBOX_SCALE = 10
SHARE = 5.0  # of AWS's default rates: half of what the sandbox allows


@pytest.fixture
def quota_sandbox(aws_sandbox: str) -> Iterator[str]:
    set_quota_scale(aws_sandbox, SANDBOX_SCALE)
    reset_log(aws_sandbox)
    yield aws_sandbox
    set_quota_scale(aws_sandbox, 0)


@pytest.fixture
def lanes_to(celery_client: Any) -> Iterator[None]:
    """Lanes go to the test's Redis broker (the web processes' Celery app, as configured in production)."""
    services.start_lanes_with(lambda job, lane: celery_client.send_task("jobs.tasks.run_lane", args=[job, lane]))
    yield
    from jobs import tasks

    services.start_lanes_with(tasks.start_lane)


@pytest.fixture
def second_keystore(people: Any, keystore: Any) -> Any:
    account = new_account_id()
    store = keystore_create(
        actor=people.actor(people.alice),
        name="Cards",
        aws_account_id=account,
        region=REGION,
        role_arn=f"arn:aws:iam::{account}:role/byok-portal",
    )
    membership_set(actor=people.actor(people.alice), keystore_id=store.pk, user=people.bob, role=Role.CUSTODIAN)
    return create_sandbox_role(store)


@pytest.fixture
def paced_worker(start_worker: Callable[..., Any], redis_url: str) -> Callable[..., Any]:
    """``paced_worker(visibility_timeout)``: a worker sharing the quota schedules in Redis.

    The broker redelivers a message after ``visibility_timeout`` s: short to see a killed worker's
    task come back soon; as in production (longer than a task) to measure the pace.
    """
    return lambda visibility_timeout=120: start_worker(
        BYOK_KMS_QUOTA_SHARE=str(SHARE),
        BYOK_KMS_QUOTA_REDIS_URL=redis_url,
        CELERY_VISIBILITY_TIMEOUT=str(visibility_timeout),
    )


def _create_job(people: Any, keystores: list[Any], count: int) -> Job:
    return services.job_create(
        actor=people.actor(people.bob),
        request=services.JobRequest(
            operation="create", keystores=[k.pk for k in keystores], names=[f"bulk-{i:03}" for i in range(count)]
        ),
    )


def _wait(job: Job, timeout: float, until: Callable[[Job], bool] | None = None) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if (until or (lambda j: j.state not in (JobState.QUEUED, JobState.RUNNING)))(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job.state}: {job.done} done, {job.failed} failed of {job.total}")


def _quota_seconds_per_account(count: int) -> float:
    return count / (kms_quotas.aws_rate("GetParametersForImport") * SHARE)


def _assert_within_share(sandbox: str, accounts: set[str]) -> None:
    calls = kms_calls(sandbox)
    assert not [c for c in calls if c["throttled"]], "the sandbox throttled a call"
    assert {c["account"] for c in calls} == accounts
    for window in (1.0, 4.0):
        for (_, operation), most in busiest_window(calls, window).items():
            allowed = kms_quotas.aws_rate(operation) * SHARE * window + 1
            assert most <= allowed, f"{operation}: {most} calls in {window} s, the share allows {allowed}"


@pytest.mark.usefixtures("lanes_to")
def test_fifty_creates_across_two_accounts_stay_within_the_share(
    people: Any, keystore: Any, second_keystore: Any, quota_sandbox: str, paced_worker: Callable[..., Any]
) -> None:
    paced_worker()
    job = _wait(_create_job(people, [keystore, second_keystore], 25), timeout=90)

    assert (job.state, job.total, job.done, job.failed) == (JobState.DONE, 50, 50, 0)
    assert set(job.items.values_list("outcome", flat=True)) == {"SUCCESS"}
    for store in (keystore, second_keystore):
        assert Key.objects.filter(keystore=store, name__startswith="bulk-").count() == 25
    _assert_within_share(quota_sandbox, {keystore.aws_account_id, second_keystore.aws_account_id})


@pytest.mark.usefixtures("lanes_to")
def test_three_workers_run_at_the_quotas_pace(
    people: Any,
    keystore: Any,
    second_keystore: Any,
    quota_sandbox: str,
    paced_worker: Callable[..., Any],
    settings: Any,
) -> None:
    for _ in range(3):
        paced_worker()
    job = _wait(_create_job(people, [keystore, second_keystore], 25), timeout=90)
    assert (job.state, job.done, job.failed) == (JobState.DONE, 50, 0)
    assert job.finished_at is not None
    elapsed = (job.finished_at - job.created_at).total_seconds()

    pace = _quota_seconds_per_account(25)  # 20 s: the accounts' lanes run side by side
    interval = pace / 25
    assert elapsed >= pace - interval, f"{elapsed:.1f} s: faster than the quota allows ({pace:.1f} s)"
    assert elapsed <= 1.2 * pace, f"{elapsed:.1f} s: slower than 1.2 × the quota's pace ({pace:.1f} s)"
    settings.BYOK_KMS_QUOTA_SHARE = SHARE  # the job's ETA comes from the same schedules
    assert services.quota_seconds("create", {"a": 25, "b": 25}) == pytest.approx(pace)
    _assert_within_share(quota_sandbox, {keystore.aws_account_id, second_keystore.aws_account_id})


@pytest.mark.usefixtures("lanes_to")
def test_a_job_survives_a_killed_worker_and_does_each_key_once(
    people: Any, keystore: Any, quota_sandbox: str, paced_worker: Callable[..., Any]
) -> None:
    worker = paced_worker(3)
    job = _create_job(people, [keystore], 12)
    # Killed in the middle of a key (most of an item is spent waiting for its GetParametersForImport slot).
    _wait(job, timeout=60, until=lambda j: j.done >= 4 and j.items.filter(state=ItemState.RUNNING).exists())
    worker.kill()
    interrupted = job.items.filter(state=ItemState.RUNNING).count()
    paced_worker(3)
    job = _wait(job, timeout=90)

    assert (job.state, job.done, job.failed) == (JobState.DONE, 12, 0)
    assert interrupted == 1
    assert job.items.filter(attempts__gt=1).exists()  # the interrupted key was taken up again
    names = list(Key.objects.filter(keystore=keystore).values_list("name", flat=True))
    assert sorted(names) == [f"bulk-{i:03}" for i in range(12)]  # each key created once
    created = AuditEvent.objects.filter(operation="create", outcome="success", keystore_id=keystore.pk)
    assert created.count() == 12
    assert set(job.items.values_list("key_id", flat=True)) == set(Key.objects.values_list("pk", flat=True))


@pytest.mark.usefixtures("lanes_to")
def test_a_requester_disabled_mid_job_stops_it_on_the_workers(
    people: Any, keystore: Any, quota_sandbox: str, paced_worker: Callable[..., Any]
) -> None:
    paced_worker()
    job = _create_job(people, [keystore], 12)
    _wait(job, timeout=60, until=lambda j: j.done >= 3)
    people.bob.is_active = False  # offboarded while the workers go through the job
    people.bob.save(update_fields=["is_active"])
    job = _wait(job, timeout=30)

    assert job.state == JobState.DONE
    assert 3 <= job.done <= 6, job.done  # the keys already under way when the account went may still end
    assert job.failed == 12 - job.done
    failed = job.items.filter(state=ItemState.FAILED)
    assert set(failed.values_list("outcome", flat=True)) == {"account_disabled"}
    assert Key.objects.filter(keystore=keystore).count() == job.done  # nothing made as the disabled account
    assert AuditEvent.objects.filter(operation="create", outcome="success").count() == job.done


@pytest.mark.usefixtures("lanes_to")
def test_keys_under_an_approval_policy_await_it_on_the_workers(
    people: Any, keystore: Any, start_worker: Callable[..., Any]
) -> None:
    from approvals.models import ApprovalRequest
    from keys.services import key_create
    from tests.approvals.conftest import set_policy

    keys = [key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name=f"k{i}").key for i in range(3)]
    set_policy(keystore, disable=1)
    start_worker()
    job = services.job_create(
        actor=people.actor(people.bob),
        request=services.JobRequest(operation="deactivate", keys=[k.pk for k in keys]),
    )
    job = _wait(job, timeout=30)

    assert (job.state, job.done, job.failed, job.awaiting_approval) == (JobState.DONE, 0, 0, 3)
    pending = set(ApprovalRequest.objects.filter(state="PENDING").values_list("pk", flat=True))
    assert set(job.items.values_list("approval_request_id", flat=True)) == pending
    assert len(pending) == 3
