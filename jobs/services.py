"""Bulk jobs: created from key ids, a key filter or (create) names; run per keystore lane within the KMS quotas.

Every item runs through the one dispatch every door uses (``REGISTRY[operation].run``)
as the job's requester, so roles, the lifecycle table, the audit trail and approval
policies apply per key exactly as when a person clicks the button.

Running: a job has a *lane* per keystore (one AWS account and region, one set of
quotas). :func:`run_lane` claims the lane's next item, runs it and records its outcome,
until the lane is empty, the job is cancelled or the task's share of work is done.
Claims are row-locked conditional updates, and a run holds each claimed item's lease (a
PostgreSQL session advisory lock, as creations do) while it works on it. An item left
``RUNNING`` by a worker that died has a free lease — PostgreSQL dropped it with the
connection — and is taken over by the next claim of its lane (the redelivered task, or
any other of the lane's tasks), after a look at the audit trail: if the operation already
succeeded, the item is recorded done without running again. So each key is done once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.identity import Actor
from audit.models import AuditEvent
from audit.services import record
from byok_portal import kms_quotas
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalPending
from byok_portal.errors import Conflict, NotFound, PermissionRefused, ServiceError
from byok_portal.vocabulary import KeyState, Operation, Outcome
from jobs.models import FINISHED_ITEM_STATES, FINISHED_JOB_STATES, ItemState, Job, JobItem, JobState
from keys import selectors
from keys.filters import KeyFilter
from keys.models import Key
from keys.operations import REGISTRY, KeyOperation
from keystores.models import Keystore, KeystoreState, Role
from keystores.selectors import beyond_restriction, is_superuser, keystores_for

logger = logging.getLogger("byok.jobs")

# Operations a bulk job may run: every lifecycle operation but those releasing material or run by the portal itself.
BULK_OPERATIONS: tuple[Operation, ...] = tuple(
    op
    for op in REGISTRY
    if op not in (Operation.PREPARE_DOWNLOAD, Operation.DOWNLOAD, Operation.WITHDRAW_DOWNLOAD, Operation.CLEANUP)
)

# What the key list page offers in bulk: the key page's buttons, each with its input's defaults.
PAGE_OPERATIONS: tuple[Operation, ...] = tuple(op for op in BULK_OPERATIONS if REGISTRY[op].button)

# The KMS calls one item makes, for the ETA: the slowest schedule among them sets the lane's pace.
_IMPORT = ("GetParametersForImport", "ImportKeyMaterial")
KMS_CALLS: Mapping[Operation, tuple[str, ...]] = {
    Operation.CREATE: ("CreateKey", *_IMPORT),
    Operation.RENEW: ("CreateKey", *_IMPORT),
    Operation.RECREATE: ("CreateKey", *_IMPORT),
    Operation.ACTIVATE: (*_IMPORT, "EnableKey"),
    Operation.UPLOAD: (*_IMPORT, "EnableKey"),
    Operation.DEACTIVATE: ("DisableKey", "DeleteImportedKeyMaterial"),
    Operation.SCHEDULE_DELETION: ("ScheduleKeyDeletion",),
    Operation.CANCEL_DELETION: ("CancelKeyDeletion",),
    Operation.UPDATE: ("TagResource",),
}
MAX_KEYS = 10_000


def seconds_per_item(operation: str) -> float:
    """The quota's pace for one item of ``operation`` in one account and region (its slowest KMS call)."""
    calls = KMS_CALLS.get(Operation(operation), ())
    rates = [
        kms_quotas.portal_rate(call, settings.BYOK_KMS_QUOTA_SHARE, settings.BYOK_KMS_QUOTA_OVERRIDES) for call in calls
    ]
    return max((1 / rate for rate in rates if rate > 0), default=0.0)


def quota_seconds(operation: str, items_per_lane: Mapping[Any, int]) -> float:
    """How long the quotas let ``items_per_lane`` take: lanes (accounts) run side by side, each at its pace."""
    return max(items_per_lane.values(), default=0) * seconds_per_item(operation)


def eta_seconds(job: Job) -> float | None:
    """Seconds left by the quotas for the items not yet finished; None once the job is over."""
    if job.state in FINISHED_JOB_STATES:
        return None
    unfinished = job.items.exclude(state__in=FINISHED_ITEM_STATES).order_by()
    left = {row["lane"]: row["n"] for row in unfinished.values("lane").annotate(n=Count("id"))}
    return round(quota_seconds(job.operation, left), 1)


class AccountDisabled(ServiceError):
    """The job's requester can no longer act (account disabled or removed): the job's keys are left alone."""

    status = 403
    code = "account_disabled"


def _actor(job: Job) -> Actor:
    """The job's requester, as whom every item acts — only while their account is active.

    Checked here, the one place an item becomes its requester, each time (``job`` is read
    afresh per item): an account disabled mid-job (offboarding, a compromise) stops the
    keys not yet done, each ending ``account_disabled`` without running.
    """
    user = job.requested_by
    if user is None or not user.is_active:
        raise AccountDisabled(f"{job.requester_name or 'The requester'}'s account is disabled: the key was left alone.")
    return Actor(
        iss=job.requester_iss,
        sub=job.requester_sub,
        display_name=job.requester_name,
        user=job.requested_by,
        request_id=job.id.hex,
    )


def _validated(entry: KeyOperation, data: Mapping[str, Any]) -> dict[str, Any]:
    if entry.body is None:
        if data:
            raise ValidationError({"parameters": f"{entry.operation} takes no parameters."})
        return {}
    body = entry.body(data=dict(data))
    if not body.is_valid():
        raise ValidationError(dict(body.errors))
    return dict(body.validated_data)


@dataclass(frozen=True)
class JobRequest:
    """What a door asks for: an operation and keys (ids), a key filter, or (create) keystores and names."""

    operation: str
    keys: Sequence[uuid.UUID] | None = None
    filter: Mapping[str, Any] | None = None
    keystores: Sequence[uuid.UUID] | None = None  # create: each name is created in each keystore
    names: Sequence[str] | None = None
    parameters: Mapping[str, Any] | None = None


def _create_items(actor: Actor, request: JobRequest, parameters: Mapping[str, Any]) -> list[JobItem]:
    if not request.keystores or not request.names:
        raise ValidationError({"names": "A create job needs keystores and the names of the keys to create."})
    names = [str(n).strip() for n in request.names]
    if len(set(names)) != len(names) or not all(names):
        raise ValidationError({"names": "Names must be given, and distinct within a job."})
    if len(names) * len(request.keystores) > MAX_KEYS:
        raise ValidationError({"names": f"At most {MAX_KEYS} keys per job."})
    assert actor.user is not None  # job_create refuses jobs without a person
    wanted = list(dict.fromkeys(request.keystores))
    found = set(
        keystores_for(actor.user).filter(pk__in=wanted, state=KeystoreState.ACTIVE).values_list("pk", flat=True)
    )
    if len(found) != len(wanted):
        raise NotFound("Keystore not found.")
    # One key's input stands for all: only the keystore and the name differ.
    _validated(REGISTRY[Operation.CREATE], {**parameters, "keystore": str(wanted[0]), "name": names[0]})
    # Interleaved, so that every keystore's lane has work from the start.
    pairs = [(keystore, name) for name in names for keystore in wanted]
    return [JobItem(position=i, lane=keystore, name=name) for i, (keystore, name) in enumerate(pairs)]


def _key_items(actor: Actor, request: JobRequest) -> list[JobItem]:
    assert actor.user is not None  # job_create refuses jobs without a person
    visible = selectors.keys_for(actor.user)
    if request.keys is not None:
        wanted = list(dict.fromkeys(request.keys))
        found = dict(visible.filter(pk__in=wanted).values_list("pk", "keystore_id"))
        missing = [str(k) for k in wanted if k not in found]
        if missing:
            raise ValidationError({"keys": f"Not found: {', '.join(missing[:10])}"})
        rows = [(k, found[k]) for k in wanted]
    elif request.filter is not None:
        # As on the key list page: DELETED keys only when that state is asked for.
        scoped = visible if request.filter.get("state") else visible.exclude(state=KeyState.DELETED)
        keys = KeyFilter(data=dict(request.filter), queryset=scoped)
        if not keys.is_valid():
            raise ValidationError({f"filter.{name}": str(errors[0]) for name, errors in keys.errors.items()})
        rows = list(
            keys.qs.order_by("keystore_id", "created_at", "id").values_list("pk", "keystore_id")[: MAX_KEYS + 1]
        )
    else:
        raise ValidationError({"keys": "Give key ids (keys) or a key filter (filter)."})
    if not rows:
        raise ValidationError({"keys": "No key matches."})
    if len(rows) > MAX_KEYS:
        raise ValidationError({"keys": f"At most {MAX_KEYS} keys per job."})
    return [JobItem(position=i, lane=keystore_id, key_id=key_id) for i, (key_id, keystore_id) in enumerate(rows)]


def job_create(*, actor: Actor, request: JobRequest) -> Job:
    """Validate, store the job and its items, audit it, and start its lanes once committed."""
    if actor.user is None:
        raise PermissionRefused("Bulk jobs are run as a person.")
    try:
        operation = Operation(request.operation)
    except ValueError:
        operation = None
    if operation not in BULK_OPERATIONS:
        raise ValidationError({"operation": f"One of: {', '.join(BULK_OPERATIONS)}."})
    entry = REGISTRY[operation]
    parameters = dict(request.parameters or {})
    if operation == Operation.CREATE:
        items = _create_items(actor, request, parameters)
    else:
        _validated(entry, parameters)
        items = _key_items(actor, request)
    selection: dict[str, Any] = (
        {"keystores": [str(k) for k in request.keystores or []], "names": list(request.names or [])}
        if operation == Operation.CREATE
        else {"keys": [str(k) for k in request.keys]}
        if request.keys is not None
        else {"filter": dict(request.filter or {})}
    )
    with transaction.atomic():
        job = Job.objects.create(
            operation=operation,
            parameters=parameters,
            selection=selection,
            total=len(items),
            requested_by=actor.user,
            requester_iss=actor.iss,
            requester_sub=actor.sub,
            requester_name=actor.display_name,
        )
        for item in items:
            item.job = job
        JobItem.objects.bulk_create(items, batch_size=1000)
        lanes = sorted({item.lane for item in items})
        record(
            actor=actor,
            operation=Operation.BULK_JOB,
            outcome=Outcome.SUCCESS,
            keystore=Keystore.objects.get(pk=lanes[0]) if len(lanes) == 1 else None,
            details={"job": str(job.pk), "operation": operation.value, "total": job.total, "keystores": len(lanes)},
        )
        transaction.on_commit(lambda: _start_lanes(job.pk, lanes))
    return job


_lane_starter: Any = None


def start_lanes_with(starter: Any) -> None:
    """Hand down the Celery task that runs a lane (``jobs.tasks``, wired at ``JobsConfig.ready``)."""
    global _lane_starter
    _lane_starter = starter


def _start_lanes(job_id: uuid.UUID, lanes: Sequence[uuid.UUID]) -> None:
    # Several tasks per lane, so one item's own latency (material, database, audit) does not
    # leave the lane's quota unused; the schedules keep them within it together.
    for _ in range(settings.BYOK_JOB_TASKS_PER_LANE):
        for lane in lanes:
            _lane_starter(str(job_id), str(lane))


def job_cancel(*, actor: Actor, job_id: uuid.UUID) -> Job:
    """Stop a job: items not yet claimed are cancelled; the ones running finish.

    Its requester, or anyone else :func:`visible_jobs` shows it to (superusers, admins of
    every keystore it touches), e.g. when the requester's account was disabled; the audit
    event names the person who cancelled, and the requester when that is someone else.
    """
    with transaction.atomic():
        job = visible_jobs(actor).select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFound("Job not found.")
        if job.state in FINISHED_JOB_STATES:
            raise Conflict("The job is over.", state=job.state)
        now = timezone.now()
        job.settled += _cancel_pending(job, now)
        job.state = JobState.CANCELLED
        job.finished_at = now
        job.save(update_fields=["state", "finished_at", "settled"])
        details: dict[str, Any] = {"job": str(job.pk), "done": job.done, "failed": job.failed, "total": job.total}
        if (job.requester_iss, job.requester_sub) != actor.identity:
            details["requester"] = {"iss": job.requester_iss, "sub": job.requester_sub, "name": job.requester_name}
        record(actor=actor, operation=Operation.CANCEL_BULK_JOB, outcome=Outcome.SUCCESS, details=details)
    return job


def _cancel_pending(job: Job, now: dt.datetime) -> int:
    """Cancel the job's items not yet claimed, numbered after those that ended (under the job's row lock)."""
    table = connection.ops.quote_name(JobItem._meta.db_table)
    # One statement however many items: ROW_NUMBER numbers them in position order (PostgreSQL, SQLite ≥ 3.33).
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET state = %s, outcome = %s, finished_at = %s, settled_seq = %s + numbered.n "  # noqa: S608 - the table name is ours
            f"FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY position) AS n FROM {table} "
            "WHERE job_id = %s AND state = %s) AS numbered "
            f"WHERE {table}.id = numbered.id",
            [ItemState.CANCELLED.value, "cancelled", now, job.settled, job.pk.hex, ItemState.PENDING.value],
        )
        return int(cursor.rowcount)


def visible_jobs(actor: Actor) -> QuerySet[Job]:
    """The jobs a person may see and cancel: their own, and — so that a job can be stopped when its requester
    cannot — those touching only keystores they administer (superusers: every job).

    Within the request's keystore restriction (an API token limited to some keystores): a job
    with any key in a keystore outside it is unknown, as that key is.
    """
    user = actor.user
    if user is None:
        return Job.objects.none()
    items = JobItem.objects.filter(job=OuterRef("pk"))
    if is_superuser(user):
        jobs = Job.objects.all()
    else:
        administered = keystores_for(user, min_role=Role.ADMIN).values("pk")
        own = Q(requester_iss=actor.iss, requester_sub=actor.sub)
        jobs = Job.objects.filter(own | ~Exists(items.exclude(lane__in=administered)))
    return jobs.exclude(Exists(beyond_restriction(user, items, "lane")))


def approval_states(job: Job) -> dict[str, int]:
    """How the approval requests holding the job's keys stand now (state → keys), e.g. {"PENDING": 2, "EXECUTED": 1}.

    ``awaiting_approval`` counts the keys the job handed to approval requests; what became of
    them is the requests' own business, read here when there are any (no query otherwise).
    """
    if not job.awaiting_approval:
        return {}
    held = job.items.filter(approval_request__isnull=False).order_by("approval_request__state")
    return {
        row["approval_request__state"]: row["n"]
        for row in held.values("approval_request__state").annotate(n=Count("id"))
    }


@dataclass(frozen=True)
class ResultsPage:
    """The items of a job that ended after the ``after``-th, in the order they ended: a poll's new results."""

    items: list[JobItem]
    after: int
    more: bool  # more ended items than the page holds: ask again with ``next_after``

    @property
    def next_after(self) -> int:
        last = self.items[-1].settled_seq if self.items else None
        return self.after if last is None else last


RESULTS_PAGE_SIZE = 1000


def settled_results(job: Job, *, after: int = 0, limit: int = RESULTS_PAGE_SIZE) -> ResultsPage:
    """One page of the job's per-key results, those that ended after the ``after``-th: one index range scan."""
    rows = list(
        job.items.filter(settled_seq__gt=after).select_related("approval_request").order_by("settled_seq")[: limit + 1]
    )
    return ResultsPage(items=rows[:limit], after=after, more=len(rows) > limit)


# --- running ------------------------------------------------------------------------


# The key space of the items' advisory locks (two int4 keys: apart from the creations' bigint locks).
_LOCK_SPACE = 0x4A4F4253  # "JOBS"


def _try_item_lock(item_id: int) -> bool:
    """Take the item's lease: a session advisory lock, held while this process works on the item.

    PostgreSQL drops it the moment the process dies or loses its connection, so an item
    whose lock is free while it says ``RUNNING`` was abandoned, and is taken over at once.
    """
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_SPACE, item_id % 2**31])
        return bool(cursor.fetchone()[0])


def _release_item_lock(item_id: int) -> None:
    if connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_SPACE, item_id % 2**31])
    except DatabaseError:
        logger.warning("could not release a job item's lease", extra={"job_item": item_id})


def _claim(job: Job, lane: uuid.UUID, run_id: str) -> JobItem | None:
    """The lane's next item, claimed (and its lease taken) for this run: abandoned by a dead worker, or pending.

    Where the database has no session locks (SQLite, for development) an item counts as
    abandoned once claimed longer than ``BYOK_JOB_ITEM_LEASE_SECONDS`` ago.
    """
    with transaction.atomic():
        candidates = JobItem.objects.select_for_update(skip_locked=True).filter(job=job, lane=lane)
        running = candidates.filter(state=ItemState.RUNNING).order_by("position")
        if connection.vendor != "postgresql":
            lease = timezone.now() - dt.timedelta(seconds=settings.BYOK_JOB_ITEM_LEASE_SECONDS)
            running = running.filter(claimed_at__lt=lease)
        item = next((i for i in running if _try_item_lock(i.pk)), None)
        interrupted = item is not None
        if item is None:
            item = candidates.filter(state=ItemState.PENDING).order_by("position").first()
            if item is None or not _try_item_lock(item.pk):
                return None
        item.state = ItemState.RUNNING
        item.attempts += 1
        if not interrupted:  # an abandoned item keeps its first claim's time: the audit trail is searched from it
            item.claimed_at = timezone.now()
        item.claimed_by = run_id
        item.save(update_fields=["state", "attempts", "claimed_by", "claimed_at"])
    return item


def _already_done(job: Job, item: JobItem) -> tuple[uuid.UUID | None, str] | None:
    """For an item whose worker died: what the audit trail says it achieved since it was claimed, if anything."""
    events = AuditEvent.objects.filter(
        operation=job.operation,
        outcome__in=(Outcome.SUCCESS, Outcome.NOOP),
        actor_iss=job.requester_iss,
        actor_sub=job.requester_sub,
        time__gte=item.claimed_at,
    )
    if job.operation == Operation.CREATE:
        created = Key.objects.filter(keystore_id=item.lane, name=item.name, created_at__gte=item.claimed_at).first()
        event = events.filter(key_id=created.pk).first() if created else None
        return (created.pk, str(event.outcome).upper()) if created and event else None
    event = events.filter(key_id=item.key_id).order_by("-seq").first()
    return (item.key_id, str(event.outcome).upper()) if event else None


class Ended(NamedTuple):
    """How an item ended: its state, the key, the outcome (SUCCESS/NOOP or an error code), why, and the approval
    request that holds it, if one does."""

    state: ItemState
    key_id: uuid.UUID | None
    outcome: str
    message: str = ""
    approval_request: uuid.UUID | None = None


# Which of the job's counters an ended item counts in.
_COUNTER = {ItemState.DONE: "done", ItemState.FAILED: "failed", ItemState.AWAITING_APPROVAL: "awaiting_approval"}


def _run_item(job: Job, item: JobItem) -> Ended:
    entry = REGISTRY[Operation(job.operation)]
    if item.attempts > 1:
        found = _already_done(job, item)
        if found is not None:
            return Ended(ItemState.DONE, found[0], found[1], "done before its worker stopped")
    try:
        if job.operation == Operation.CREATE:
            data = _validated(entry, {**job.parameters, "keystore": str(item.lane), "name": item.name})
            done = entry.run(_actor(job), item.lane, data)
        else:
            assert item.key_id is not None
            done = entry.run(_actor(job), item.key_id, _validated(entry, job.parameters))
    except ApprovalPending as exc:
        # Not a failure: the key's policy wants approvals, and the request runs the operation once it has them.
        request_id = uuid.UUID(str(exc.approval_request["id"]))
        return Ended(ItemState.AWAITING_APPROVAL, item.key_id, exc.code, exc.detail, request_id)
    except ServiceError as exc:
        return Ended(ItemState.FAILED, item.key_id, exc.code, exc.detail)
    except AwsError as exc:
        return Ended(ItemState.FAILED, item.key_id, exc.code, exc.message)
    except ValidationError as exc:
        return Ended(ItemState.FAILED, item.key_id, "validation_error", "; ".join(exc.messages))
    except Exception as exc:  # one key's surprise must not stop the others; its lease would hold it forever
        logger.exception("a bulk job's key failed unexpectedly", extra={"job": str(job.pk), "position": item.position})
        return Ended(ItemState.FAILED, item.key_id, "unexpected_error", type(exc).__name__)
    return Ended(ItemState.DONE, done.key.pk, str(done.outcome).upper())


def _finish(job: Job, item: JobItem, run_id: str, ended: Ended) -> None:
    with transaction.atomic():
        # The job's row lock numbers the items as they end, in commit order, so a poll's cursor skips none.
        settled = Job.objects.select_for_update().values_list("settled", flat=True).get(pk=job.pk)
        claimed = JobItem.objects.filter(pk=item.pk, state=ItemState.RUNNING, claimed_by=run_id).update(
            state=ended.state,
            key_id=ended.key_id,
            outcome=ended.outcome[:32],
            message=ended.message[:2000],
            approval_request_id=ended.approval_request,
            finished_at=timezone.now(),
            settled_seq=settled + 1,
        )
        if claimed:  # counted once, with the item's state
            counter = _COUNTER[ended.state]
            Job.objects.filter(pk=job.pk).update(settled=F("settled") + 1, **{counter: F(counter) + 1})


def _close_if_finished(job_id: uuid.UUID) -> None:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.state in FINISHED_JOB_STATES or job.items.exclude(state__in=FINISHED_ITEM_STATES).exists():
            return
        job.state = JobState.FAILED if job.total and job.failed == job.total else JobState.DONE
        job.finished_at = timezone.now()
        job.save(update_fields=["state", "finished_at"])


@dataclass
class LaneResult:
    """What one run of a lane did, and whether the lane still has work (handed to a new task)."""

    done: int = 0
    failed: int = 0
    awaiting_approval: int = 0
    more: bool = False


def run_lane(job_id: uuid.UUID, lane: uuid.UUID, *, until: float, limit: int) -> LaneResult:
    """Work the lane's items one after the other until none is left, the job is cancelled, ``until`` passes
    or ``limit`` items are done (then the lane goes back in the queue, behind other lanes' tasks, so that
    workers move between lanes instead of staying with the first ones they took)."""
    result = LaneResult()
    # Claims name this run, not the Celery task: a message redelivered while its first delivery still
    # runs (a visibility timeout shorter than the task) must not take over that delivery's item.
    run_id = uuid.uuid4().hex
    Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(state=JobState.RUNNING, started_at=timezone.now())
    while True:
        job = Job.objects.select_related("requested_by").filter(pk=job_id).first()
        if job is None or job.state != JobState.RUNNING:
            return result
        if time.monotonic() >= until or result.done + result.failed + result.awaiting_approval >= limit:
            result.more = True
            return result
        item = _claim(job, lane, run_id)
        if item is None:
            _close_if_finished(job_id)
            return result
        try:
            ended = _run_item(job, item)
            _finish(job, item, run_id, ended)
        finally:
            _release_item_lock(item.pk)
        field = _COUNTER[ended.state]
        setattr(result, field, getattr(result, field) + 1)
