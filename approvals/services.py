"""Dual control (SPEC §12): the gate, and each step of an approval request — approve, reject, cancel, expire, run.

People are counted by ``(iss, sub)``, the identity of the session or token that acts
(:class:`accounts.identity.Actor`), never by account: a second account of the same
person is the same person. Every step locks the request row and is audited in the same
transaction; refusals are audited in a transaction of their own, after the attempt.

At quorum the request is APPROVED and its operation is handed to Celery, which runs it
as the requester (:func:`execute`): the operation's own service re-checks the key's
state at that moment, and a refusal ends the request FAILED with the 409's reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.identity import Actor
from accounts.models import User
from approvals.models import OPEN_STATES, Approval, ApprovalPolicy, ApprovalRequest, RequestState
from approvals.serializers import represent
from audit.models import AuditEvent
from audit.services import record, record_refusal
from byok_portal.aws import AwsError
from byok_portal.dual_control import ApprovalGroup, ApprovalPending, Approved, Covered, ask, executing
from byok_portal.errors import Conflict, NotFound, PermissionRefused, ServiceError
from byok_portal.vocabulary import Operation, Outcome
from keys import custody
from keys import services as key_services
from keys.lifecycle import InvalidState, UnsupportedForKeySpec, decide
from keys.models import Key
from keys.operations import REGISTRY
from keystores import services as keystore_services
from keystores.models import Keystore, KeystoreState, Role
from keystores.selectors import keystores_for, role_in

logger = logging.getLogger("byok.approvals")

POLICY_FIELDS = tuple(group.value for group in ApprovalGroup)


class SelfApproval(ServiceError):
    """The requester (any account of the same person) cannot approve their own request."""

    status = 403
    code = "self_approval"


class RequesterUnnamed(ServiceError):
    """An operator's command that names no person asked for an operation that needs approvals."""

    status = 403
    code = "requester_unnamed"


class RequesterDisabled(ServiceError):
    """The requester's account is disabled: what they asked for would run as an account that may no longer act."""

    status = 409
    code = "requester_disabled"


class NotStalled(ServiceError):
    """Ending by an admin is for an approved request whose run is not alive; any other is answered 409."""

    status = 409
    code = "not_stalled"


class AlreadyDecided(ServiceError):
    """The request has ended (or reached its quorum): nothing more can be decided."""

    status = 409
    code = "already_decided"


# --- reading ------------------------------------------------------------------------


def policy_of(keystore: Keystore) -> ApprovalPolicy:
    """The keystore's policy; a keystore that never had one needs no approvals (an unsaved default)."""
    return ApprovalPolicy.objects.filter(keystore=keystore).first() or ApprovalPolicy(keystore=keystore)


def requests_for(user: Any) -> Any:
    """The approval requests of the keystores ``user`` holds a role in (superusers: all)."""
    return ApprovalRequest.objects.filter(keystore__in=keystores_for(user)).select_related(
        "keystore", "key", "requested_by"
    )


def get_request_for(user: Any, request_id: Any) -> ApprovalRequest:
    try:
        found = requests_for(user).prefetch_related("approvals").filter(pk=uuid.UUID(str(request_id))).first()
    except ValueError:
        found = None
    if found is None:
        raise NotFound("Approval request not found.")
    return found


def awaiting(user: Any, identity: tuple[str, str]) -> Any:
    """Open requests ``user`` could approve now: pending, in a keystore where they act, neither theirs nor approved."""
    iss, sub = identity
    return (
        ApprovalRequest.objects.filter(
            state=RequestState.PENDING, keystore__in=keystores_for(user, min_role=Role.CUSTODIAN)
        )
        .exclude(requested_by_iss=iss, requested_by_sub=sub)
        .exclude(approvals__iss=iss, approvals__sub=sub)
    )


def may_approve(actor: Actor, request: ApprovalRequest, policy: ApprovalPolicy | None = None) -> bool:
    """Whether ``actor`` holds one of the policy's approver roles in the request's keystore."""
    if actor.user is None:
        return False
    role = role_in(actor.user, request.keystore)
    roles = (policy or policy_of(request.keystore)).approver_roles
    return role is not None and role.value in roles


def described(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as the audit trail keeps them: a public key by its fingerprint, never the PEM."""
    shown = dict(parameters)
    if shown.get("public_key"):
        shown["public_key"] = custody.public_key_fingerprint(str(shown["public_key"]))
    return shown


def _json(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON values (dates as ISO text), as the request row stores them."""
    return dict(json.loads(json.dumps(dict(parameters), cls=DjangoJSONEncoder)))


# --- the gate -------------------------------------------------------------------------


def gate(actor: Actor, attempt: Covered) -> str | None:
    """Let a covered operation run now (its group needs no approvals here) or record a request and raise.

    The key is read without its row lock. When the key's state is why the operation may run
    now (a no-op, or a refusal the service answers), that state is returned: the service
    re-checks it under the lock, and a key that moved meanwhile comes back here
    (:func:`byok_portal.dual_control.confirm_state`).
    """
    key: Key | None = None
    if attempt.key_id is not None:
        operation = Operation(attempt.operation)
        # The caller's role first, audited if refused: an outsider cannot even ask.
        key = key_services.authorize(actor=actor, key_id=attempt.key_id, operation=operation)
        try:
            if not decide(operation, key.state, key.key_spec):
                return key.state  # a no-op: the service answers it at once
        except (InvalidState, UnsupportedForKeySpec):
            return key.state  # refused by the lifecycle table: the service answers (and audits) the 409 at once
        keystore = key.keystore
    else:
        keystore = Keystore.objects.get(pk=str(attempt.keystore_id))
    policy = policy_of(keystore)
    required = policy.required(attempt.group)
    if required == 0:
        return None
    if actor.unnamed_person:
        # The two-person rule counts people by (iss, sub): a request by nobody in particular could be
        # approved by the very person who asked. The portal's own jobs (nobody behind them) may ask.
        refused = RequesterUnnamed(
            f"{attempt.operation} needs {required} approval(s) in “{keystore.name}”, and only a named person "
            "may ask for it (who cannot then approve it): say who you are (byok_grant --as USER)."
        )
        record_refusal(actor=actor, operation=Operation(attempt.operation), exc=refused, keystore=keystore, key=key)
        raise refused
    request = _open_request(actor, attempt, keystore, key, policy, required)
    raise ApprovalPending(
        f"{attempt.operation} waits for {required} approval(s) from other people holding an approver role "
        f"({', '.join(policy.approver_roles)}) in “{keystore.name}”; it runs once they approve.",
        approval_request=represent(request),
    )


def _open_request(
    actor: Actor, attempt: Covered, keystore: Keystore, key: Key | None, policy: ApprovalPolicy, required: int
) -> ApprovalRequest:
    parameters = _json(attempt.parameters)
    refusal: ServiceError | None = None
    with transaction.atomic():
        if key is not None:
            # The key's row lock serialises two people asking at once: one request per key is open at a time.
            Key.objects.select_for_update(of=("self",)).filter(pk=key.pk).first()
            existing = ApprovalRequest.objects.filter(key=key, state__in=OPEN_STATES).first()
            if existing is not None:
                same = (existing.operation, existing.parameters, existing.requester) == (
                    attempt.operation,
                    parameters,
                    actor.identity,
                )
                if same:
                    return existing  # the same person asking again (a retry): the same request
                refusal = Conflict(
                    f"Approval request {existing.pk} ({existing.operation}) is already open for this key; "
                    "it must end before another is made.",
                    state=key.state,
                    reason="approval_pending",
                    approval_request=str(existing.pk),
                )
        if refusal is None:
            request = ApprovalRequest.objects.create(
                operation=attempt.operation,
                group=attempt.group.value,
                keystore=keystore,
                key=key,
                parameters=parameters,
                requested_by=actor.user,
                requested_by_iss=actor.iss,
                requested_by_sub=actor.sub,
                requested_by_name=actor.display_name,
                required=required,
                expires_at=timezone.now() + dt.timedelta(hours=policy.expires_hours),
            )
            if key is not None:
                Key.objects.filter(pk=key.pk).update(pending_approval=request.pk)
            record(
                actor=actor,
                operation=Operation.REQUEST_APPROVAL,
                outcome=Outcome.SUCCESS,
                keystore=keystore,
                key=key,
                state_before=key.state if key else "",
                state_after=key.state if key else "",
                details=_event(request, parameters=described(parameters)),
            )
            return request
    record_refusal(
        actor=actor,
        operation=Operation(attempt.operation),
        exc=refusal,
        keystore=keystore,
        key=key,
        state=key.state if key else "",
    )
    raise refusal


def _audit(
    actor: Actor, operation: Operation, request: ApprovalRequest, outcome: Outcome = Outcome.SUCCESS, **details: Any
) -> None:
    """One step of the request, in the audit trail: on its keystore and key, naming the request."""
    record(
        actor=actor,
        operation=operation,
        outcome=outcome,
        keystore=request.keystore,
        key=request.key,
        details=_event(request, **details),
    )


def _event(request: ApprovalRequest, **extra: Any) -> dict[str, Any]:
    return {
        "request": str(request.pk),
        "operation": request.operation,
        "group": request.group,
        "required": request.required,
        **extra,
    }


# --- decisions ------------------------------------------------------------------------


def _lock(request_id: uuid.UUID) -> ApprovalRequest:
    return ApprovalRequest.objects.select_for_update(of=("self",)).select_related("keystore", "key").get(pk=request_id)


def _end(request: ApprovalRequest, state: RequestState, **changes: Any) -> None:
    """End the request: its key no longer shows it as pending."""
    request.state = state
    request.decided_at = request.decided_at or timezone.now()
    for name, value in changes.items():
        setattr(request, name, value)
    request.save()
    if request.key_id is not None:
        Key.objects.filter(pk=request.key_id, pending_approval=request.pk).update(pending_approval=None)


def _expire_if_due(request: ApprovalRequest, actor: Actor, now: dt.datetime) -> bool:
    if request.state != RequestState.PENDING or request.expires_at > now:
        return False
    _end(request, RequestState.EXPIRED, decided_at=now)
    _audit(actor, Operation.EXPIRE_APPROVAL, request, expires_at=request.expires_at.isoformat())
    return True


def _decide(
    actor: Actor, request_id: Any, operation: Operation, decision: Callable[[ApprovalRequest], ServiceError | None]
) -> ApprovalRequest:
    """Lock the request, refuse if it has ended (expiring it if due), else apply ``decision``; audit refusals."""
    request = get_request_for(actor.user, request_id) if actor.user is not None else None
    if request is None:
        raise NotFound("Approval request not found.")
    with transaction.atomic():
        request = _lock(request.pk)
        if _expire_if_due(request, Actor.system("approval-expiry"), timezone.now()) or request.state not in (
            RequestState.PENDING,
        ):
            refusal: ServiceError | None = AlreadyDecided(
                f"This approval request is {request.state.lower()}: nothing more can be decided.",
                state=request.state,
            )
        else:
            refusal = decision(request)
    if refusal is not None:
        record_refusal(
            actor=actor,
            operation=operation,
            exc=refusal,
            keystore=request.keystore,
            key=request.key,
            details={"request": str(request.pk)},
        )
        raise refusal
    return request


def approve(*, actor: Actor, request_id: Any) -> ApprovalRequest:
    """Approve; the approval that reaches the quorum hands the operation to Celery (after commit)."""

    def decision(request: ApprovalRequest) -> ServiceError | None:
        if actor.identity == request.requester:
            return SelfApproval("You asked for this operation: someone else must approve it.")
        policy = policy_of(request.keystore)
        if not may_approve(actor, request, policy):
            return PermissionRefused(
                f"Approving needs one of these roles in “{request.keystore.name}”: {', '.join(policy.approver_roles)}."
            )
        if not request.requester_active:
            # It would run as an account that may no longer act: reject it (or let it expire) instead.
            return RequesterDisabled(
                f"The account of {request.requested_by_name}, who asked for this, is disabled: "
                "it cannot be approved; reject it, or let it expire."
            )
        if request.approvals.filter(iss=actor.iss, sub=actor.sub).exists():
            # The same person again (perhaps through another account): counted once.
            _audit(actor, Operation.APPROVE, request, outcome=Outcome.NOOP, approvals=request.approvals.count())
            return None
        Approval.objects.create(
            request=request, iss=actor.iss, sub=actor.sub, display_name=actor.display_name, user=actor.user
        )
        count = request.approvals.count()
        if count >= request.required:
            request.state = RequestState.APPROVED
            request.decided_at = timezone.now()
            request.save(update_fields=["state", "decided_at"])
            # Robust: a broker that is away must not turn a recorded approval into an error; the beat task
            # hands over approved requests that never started (resume_stalled).
            transaction.on_commit(lambda: _run_soon(request.pk), robust=True)
        _audit(actor, Operation.APPROVE, request, approvals=count, quorum=count >= request.required)
        return None

    return _decide(actor, request_id, Operation.APPROVE, decision)


def reject(*, actor: Actor, request_id: Any, reason: str = "") -> ApprovalRequest:
    """Reject: any one rejection by a would-be approver ends the request."""
    reason = (reason or "").strip()[:2000]

    def decision(request: ApprovalRequest) -> ServiceError | None:
        if actor.identity == request.requester:
            return SelfApproval("You asked for this operation: cancel it instead of rejecting it.")
        if not may_approve(actor, request):
            return PermissionRefused("Rejecting needs an approver role in this keystore.")
        _end(request, RequestState.REJECTED, reason=reason)
        _audit(actor, Operation.REJECT, request, reason=reason)
        return None

    return _decide(actor, request_id, Operation.REJECT, decision)


def cancel(*, actor: Actor, request_id: Any) -> ApprovalRequest:
    """Cancel: only the requester (any account of the same person)."""

    def decision(request: ApprovalRequest) -> ServiceError | None:
        if actor.identity != request.requester:
            return PermissionRefused("Only the person who asked for this operation can cancel it.")
        _end(request, RequestState.CANCELLED)
        _audit(actor, Operation.CANCEL_APPROVAL, request)
        return None

    return _decide(actor, request_id, Operation.CANCEL_APPROVAL, decision)


def expire_due(now: dt.datetime | None = None) -> int:
    """End every pending request whose time is up (Celery beat); the number ended."""
    moment = now or timezone.now()
    actor = Actor.system("approval-expiry")
    ended = 0
    due = ApprovalRequest.objects.filter(state=RequestState.PENDING, expires_at__lte=moment)
    for request_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            ended += _expire_if_due(_lock(request_id), actor, moment)
    return ended


def resume_stalled(now: dt.datetime | None = None, *, after: dt.timedelta = dt.timedelta(minutes=1)) -> int:
    """Hand over again the approved requests whose run never started (their message was lost) or whose run
    was lost with its worker (the claim's lease ran out); the number.

    Running twice is harmless: :func:`execute` claims a request once per lease.
    """
    moment = now or timezone.now()
    stalled = ApprovalRequest.objects.filter(
        Q(started_at__isnull=True, decided_at__lte=moment - after) | Q(started_at__lte=moment - _lease()),
        state=RequestState.APPROVED,
    ).values_list("pk", flat=True)
    ids = list(stalled)
    for request_id in ids:
        _run_soon(request_id)
    return len(ids)


def _lease() -> dt.timedelta:
    """How long a claimed run is taken to be alive: longer than any task may run (the pool kills it by then)."""
    return dt.timedelta(seconds=settings.BYOK_APPROVAL_LEASE_SECONDS)


# --- running an approved operation ------------------------------------------------------

_run_with: list[Callable[[uuid.UUID], None]] = []


def run_with(enqueue: Callable[[uuid.UUID], None]) -> None:
    """How an approved request's operation is started (the Celery task, handed in by ``approvals.tasks``)."""
    _run_with[:] = [enqueue]


def _run_soon(request_id: uuid.UUID) -> None:
    for enqueue in _run_with:
        enqueue(request_id)


def _key_operation(actor: Actor, request: ApprovalRequest) -> dict[str, Any]:
    entry = REGISTRY[Operation(request.operation)]
    data: dict[str, Any] = {}
    if entry.body is not None:
        body = entry.body(data=request.parameters)
        if not body.is_valid():
            raise ValidationError({name: [str(e) for e in errors] for name, errors in body.errors.items()})
        data = dict(body.validated_data)
    assert request.key_id is not None
    done = entry.run(actor, request.key_id, data)
    return {"outcome": str(done.outcome), "key": str(done.key.pk), "state": done.key.state}


def _delete_keystore(actor: Actor, request: ApprovalRequest) -> dict[str, Any]:
    keystore = keystore_services.keystore_delete(actor=actor, keystore_id=request.keystore_id)
    return {"outcome": str(Outcome.SUCCESS), "keystore_state": keystore.state}


def _member(request: ApprovalRequest) -> User:
    user = User.objects.filter(pk=request.parameters.get("user")).first()
    if user is None:
        raise Conflict("The person this change names no longer has an account.", state="", reason="unknown_user")
    return user


def _grant(actor: Actor, request: ApprovalRequest) -> dict[str, Any]:
    role = Role(request.parameters["role"])
    keystore_services.membership_set(actor=actor, keystore_id=request.keystore_id, user=_member(request), role=role)
    return {"outcome": str(Outcome.SUCCESS), "role": role.value}


def _revoke(actor: Actor, request: ApprovalRequest) -> dict[str, Any]:
    keystore_services.membership_remove(actor=actor, keystore_id=request.keystore_id, user=_member(request))
    return {"outcome": str(Outcome.SUCCESS)}


def _policy(actor: Actor, request: ApprovalRequest) -> dict[str, Any]:
    policy = policy_update(actor=actor, keystore_id=request.keystore_id, values=request.parameters)
    return {"outcome": str(Outcome.SUCCESS), "policy": {name: getattr(policy, name) for name in POLICY_FIELDS}}


EXECUTORS: dict[str, Callable[[Actor, ApprovalRequest], dict[str, Any]]] = {
    **{entry.operation.value: _key_operation for entry in REGISTRY.values() if entry.approval_group is not None},
    Operation.DELETE_KEYSTORE.value: _delete_keystore,
    Operation.GRANT.value: _grant,
    Operation.REVOKE.value: _revoke,
    Operation.UPDATE_APPROVAL_POLICY.value: _policy,
}


def _failure(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, AwsError):
        return {"status": 502, "code": exc.kind, "aws_error_code": exc.code, "detail": exc.message}
    if isinstance(exc, ServiceError):
        return {"status": exc.status, **exc.as_dict()}
    messages = getattr(exc, "message_dict", None) or {"non_field_errors": getattr(exc, "messages", [str(exc)])}
    return {"status": 400, "code": "invalid", "detail": messages}


def _claim(request_id: uuid.UUID) -> tuple[dt.datetime, bool, int] | None:
    """Take an APPROVED request's run, or None: the claim's time, whether it takes over a lost run, and how
    many runs have claimed the request, this one included.

    A run is free when nobody claimed it, or when its claim is older than the lease: the
    worker that held it died (a killed task is not retried by Celery, and a redelivered
    message must not be dropped as "already started"). The row lock makes two takers wait
    for each other, and the second finds the fresh claim.
    """
    now = timezone.now()
    with transaction.atomic():
        request = (
            ApprovalRequest.objects.select_for_update(of=("self",))
            .filter(Q(started_at__isnull=True) | Q(started_at__lte=now - _lease()), pk=request_id)
            .filter(state=RequestState.APPROVED)
            .first()
        )
        if request is None:
            return None
        resumed = request.started_at is not None
        request.started_at = now
        request.runs += 1
        request.save(update_fields=["started_at", "runs"])
    return now, resumed, request.runs


def _ran_already(request: ApprovalRequest) -> AuditEvent | None:
    """The operation's own audit event of an earlier, lost run of ``request``, if that run got so far.

    The operation and its event commit together, so the event is the proof that the
    operation took place: running it again would do it twice.
    """
    return (
        AuditEvent.objects.filter(
            keystore_id=request.keystore_id,
            operation=request.operation,
            time__gte=request.decided_at or request.created_at,
            details__approval__request=str(request.pk),
        )
        .order_by("-seq")
        .first()
    )


def _outcome_of(event: AuditEvent) -> tuple[RequestState, dict[str, Any]]:
    result: dict[str, Any] = {"outcome": event.outcome, "audit_seq": event.seq, "recovered": True}
    if event.outcome in (Outcome.SUCCESS, Outcome.NOOP):
        return RequestState.EXECUTED, result
    return RequestState.FAILED, {**result, "code": event.reason or event.outcome, "detail": event.error}


def _run(
    actor: Actor, request: ApprovalRequest, approved: Approved, *, resumed: bool, runs: int
) -> tuple[RequestState, dict[str, Any]]:
    """Run the request's operation (or find how an earlier, lost run ended); how the request ends."""
    earlier = _ran_already(request) if resumed else None
    if earlier is not None:
        return _outcome_of(earlier)
    if runs > settings.BYOK_APPROVAL_MAX_RUNS:
        # Every run so far died with its worker (killed, out of memory): the next would too.
        return RequestState.FAILED, {
            "status": 500,
            "code": "run_abandoned",
            "detail": f"Its run was lost with its worker {runs - 1} times; it is not tried again.",
        }
    if not request.requester_active:
        return RequestState.FAILED, {
            "status": 409,
            "code": "account_disabled",
            "detail": "The account of the person who asked for this is disabled; it runs as them, so it did not run.",
        }
    try:
        with executing(approved):
            return RequestState.EXECUTED, EXECUTORS[request.operation](actor, request)
    except (ServiceError, AwsError, ValidationError) as exc:
        return RequestState.FAILED, _failure(exc)
    except Exception as exc:
        # Anything else (a sealed blob that does not open, a bug) ends the request too: left APPROVED,
        # it would keep its key from every other covered operation. The class only: a message may quote data.
        logger.exception("approved run failed unexpectedly", extra={"request": str(request.pk)})
        return RequestState.FAILED, {
            "status": 500,
            "code": "unexpected_error",
            "error": type(exc).__name__,
            "detail": f"Unexpected {type(exc).__name__}; the details are in the server log.",
        }


def execute(request_id: uuid.UUID) -> ApprovalRequest:
    """Run an APPROVED request's operation, once, as its requester; end it EXECUTED or FAILED.

    The run is claimed first (:func:`_claim`): of two deliveries of the task, or two workers,
    one runs the operation. A run lost with its worker is claimed again once its lease is
    over (the redelivered task, or :func:`resume_stalled`); if the lost run's operation had
    already taken place (its audit event names the request), the request is ended by that
    outcome instead of running the operation a second time. The services' own steps are safe
    to retry when the lost run stopped half-way through; after ``BYOK_APPROVAL_MAX_RUNS`` lost
    runs the request ends FAILED (``run_abandoned``). A requester whose account was disabled
    meanwhile ends it FAILED (``account_disabled``); so does any error (``unexpected_error``).
    """
    claim = _claim(request_id)
    request = ApprovalRequest.objects.select_related("keystore", "key", "requested_by").get(pk=request_id)
    if claim is None:
        return request
    claimed_at, resumed, runs = claim
    actor = Actor(
        iss=request.requested_by_iss,
        sub=request.requested_by_sub,
        display_name=request.requested_by_name,
        user=request.requested_by,
    )
    approvers = tuple((a.iss, a.sub, a.display_name) for a in request.approvals.all())
    approved = Approved(request.pk, request.operation, request.keystore_id, request.key_id, approvers)
    state, result = _run(actor, request, approved, resumed=resumed, runs=runs)
    with transaction.atomic():
        request = _lock(request.pk)
        if request.state != RequestState.APPROVED or request.started_at != claimed_at:
            # This run outlived its lease and another took the request over (or an admin ended it): that one ends it.
            logger.warning("approved run ended after its lease", extra={"request": str(request.pk)})
            return request
        _end(request, state, result=result)
        record(
            actor=actor,
            operation=Operation.EXECUTE_APPROVAL,
            outcome=Outcome.SUCCESS if state == RequestState.EXECUTED else Outcome.FAILED,
            keystore=request.keystore,
            key=request.key,
            reason=str(result.get("reason") or result.get("code") or "") if state == RequestState.FAILED else "",
            details=_event(
                request,
                result=result,
                approvers=[{"iss": i, "sub": s, "name": n} for i, s, n in approvers],
                **({"resumed": True} if resumed else {}),
            ),
        )
    return request


def run_alive(request: ApprovalRequest, now: dt.datetime | None = None) -> bool:
    """Whether a claimed run of ``request`` may still be running (its lease is not over)."""
    return request.started_at is not None and request.started_at > (now or timezone.now()) - _lease()


def may_end(actor: Actor, request: ApprovalRequest) -> bool:
    """Whether ``actor`` may end ``request`` as stalled: a superuser, or an admin of its keystore."""
    user = actor.user
    if user is None:
        return False
    return bool(user.is_superuser) or role_in(user, request.keystore) == Role.ADMIN


def end_stalled(*, actor: Actor, request_id: Any) -> ApprovalRequest:
    """An admin ends an APPROVED request whose run is not alive (never started, or its lease is over).

    Refused (409 ``not_stalled``) for a request in any other state, or while a run holds its
    lease: that run ends it. If a lost run had already done the operation (its audit event
    names the request), the request ends by that outcome; otherwise FAILED (``ended_by_admin``).
    A run claimed afterwards finds it ended and does nothing.
    """
    request = get_request_for(actor.user, request_id) if actor.user is not None else None
    if request is None:
        raise NotFound("Approval request not found.")
    refusal: ServiceError | None = None
    with transaction.atomic():
        request = _lock(request.pk)
        if not may_end(actor, request):
            refusal = PermissionRefused(f"Ending a stalled request needs the admin role in “{request.keystore.name}”.")
        elif request.state != RequestState.APPROVED:
            refusal = NotStalled(
                f"This request is {request.state.lower()}: only an approved request whose run stalled can be ended; "
                "a pending one is rejected or cancelled.",
                state=request.state,
            )
        elif run_alive(request):
            refusal = NotStalled(
                "Its run is in progress (claimed at "
                f"{request.started_at.isoformat() if request.started_at else '?'}): it ends the request itself.",
                state=request.state,
            )
        else:
            earlier = _ran_already(request)
            if earlier is not None:
                state, result = _outcome_of(earlier)
            else:
                state, result = (
                    RequestState.FAILED,
                    {
                        "status": 409,
                        "code": "ended_by_admin",
                        "detail": f"Ended by {actor.display_name}: its run had stalled.",
                    },
                )
            _end(request, state, result=result)
            _audit(actor, Operation.END_APPROVAL, request, result=result, runs=request.runs)
    if refusal is not None:
        record_refusal(
            actor=actor,
            operation=Operation.END_APPROVAL,
            exc=refusal,
            keystore=request.keystore,
            key=request.key,
            details={"request": str(request.pk)},
        )
        raise refusal
    return request


# --- the policy -------------------------------------------------------------------------


def policy_update(*, actor: Actor, keystore_id: Any, values: Mapping[str, Any]) -> ApprovalPolicy:
    """Change the keystore's policy (admins); itself covered by the ``membership`` group of the policy in force."""
    keystore = keystore_services.keystore_by_id(keystore_id)
    attempt = {name: values[name] for name in (*POLICY_FIELDS, "approver_roles", "expires_hours") if name in values}
    keystore_services.require_role_audited(actor, keystore, Role.ADMIN, Operation.UPDATE_APPROVAL_POLICY, attempt)
    if keystore.state == KeystoreState.DELETED:
        raise Conflict("The keystore is deleted.", state=keystore.state)
    _validated(keystore, attempt)
    ask(
        actor,
        Covered(
            ApprovalGroup.MEMBERSHIP, Operation.UPDATE_APPROVAL_POLICY, keystore_id=keystore.pk, parameters=attempt
        ),
    )
    with transaction.atomic():
        Keystore.objects.select_for_update().filter(pk=keystore.pk).first()
        policy = policy_of(keystore)
        changed = keystore_services.apply_changes(policy, attempt)
        policy.full_clean()
        policy.save()
        record(
            actor=actor,
            operation=Operation.UPDATE_APPROVAL_POLICY,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            details={"changed": changed},
        )
    return policy


def _validated(keystore: Keystore, values: Mapping[str, Any]) -> None:
    """The new values, judged by the model's own validators before anyone is asked to approve them."""
    candidate = policy_of(keystore)
    for name, value in values.items():
        setattr(candidate, name, value)
    candidate.full_clean(exclude=["keystore"])
    roles = candidate.approver_roles
    if not isinstance(roles, list) or not roles or any(role not in Role.values for role in roles):
        raise ValidationError({"approver_roles": f"A non-empty list of roles among: {', '.join(Role.values)}."})
