"""Dual control's hook (SPEC §12): a covered operation asks the approval gate before it runs.

Every door runs an operation through one place — the key operations registry
(``keys.operations``) or the keystore service that does it — and that place calls
:func:`ask` with the operation's group. The gate itself (the approvals app, which sits
above every app it guards) is handed down at start-up with :func:`gate_with`: under a
policy that needs approvals it records an approval request and raises
:class:`ApprovalPending`, which each door answers as "202, waiting for approval".

An approved request runs its operation inside :func:`executing`: that one operation on
that one target passes the gate, and the audit trail names its approvers (:func:`current`).

The gate judges a key operation without the key's row lock (it must not wait behind a
slow KMS call of another operation to answer "202"), so when it lets an operation run
*because of the key's state* (a no-op, or a refusal the service answers) it says which
state it judged. The operation runs inside :func:`judged`, and the service, once it holds
the row lock, calls :func:`confirm_state`: a key that has moved since (an activation
finished meanwhile) raises :class:`StateChanged`, the work rolls back, and the gate
judges the new state — so a covered operation never runs unapproved on a stale "no-op".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from byok_portal.errors import ServiceError


class ApprovalGroup(StrEnum):
    """The operation groups an approval policy counts approvals for (SPEC §12)."""

    DESTROY = "destroy"
    DISABLE = "disable"
    CHANGE_MATERIAL = "change_material"
    EXPORT = "export"
    MEMBERSHIP = "membership"


class ApprovalPending(ServiceError):
    """Not done yet: an approval request was recorded instead (``202`` + the request)."""

    status = 202
    code = "approval_pending"

    def __init__(self, detail: str, *, approval_request: Mapping[str, Any]) -> None:
        super().__init__(detail)
        self.approval_request = dict(approval_request)

    def as_dict(self) -> dict[str, Any]:
        return {"approval_request": self.approval_request, "detail": self.detail, "code": self.code}


@dataclass(frozen=True)
class Covered:
    """One attempt at a covered operation, as the gate sees it: what, on which target, with which input."""

    group: ApprovalGroup
    operation: str
    keystore_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Approved:
    """The approved request whose operation is running now, and who approved it (for the audit trail)."""

    request_id: uuid.UUID
    operation: str
    keystore_id: uuid.UUID | None
    key_id: uuid.UUID | None
    approvers: tuple[tuple[str, str, str], ...]  # (iss, sub, display name)

    def covers(self, attempt: Covered) -> bool:
        if attempt.operation != self.operation or attempt.key_id != self.key_id:
            return False
        return attempt.key_id is not None or attempt.keystore_id == self.keystore_id

    def audit_details(self) -> dict[str, Any]:
        return {
            "request": str(self.request_id),
            "approvers": [{"iss": iss, "sub": sub, "name": name} for iss, sub, name in self.approvers],
        }


class StateChanged(Exception):
    """The key left the state the gate judged before the operation took its row lock: ask the gate again.

    Not a :class:`ServiceError`: nobody is answered with it and nothing is audited; the
    operation's door catches it, and the work it interrupted has rolled back.
    """


@dataclass(frozen=True)
class Judged:
    """The gate let ``operation`` on ``key_id`` run because the key was in ``state`` (a no-op or a refusal)."""

    operation: str
    key_id: uuid.UUID
    state: str


# The gate takes the acting identity (``accounts.identity.Actor``) and the attempt; it returns to let
# the operation run now — with the key state it judged when that state was the reason, else None —
# or raises (ApprovalPending, or a refusal).
Gate = Callable[[Any, Covered], str | None]
_gate: list[Gate] = []
_running: ContextVar[Approved | None] = ContextVar("byok_approved_operation", default=None)
_judged: ContextVar[Judged | None] = ContextVar("byok_judged_state", default=None)


def gate_with(gate: Gate) -> None:
    """Install the approval gate (the approvals app's ``ready()``)."""
    _gate[:] = [gate]


def ask(actor: Any, attempt: Covered) -> str | None:
    """Let ``attempt`` run now, or raise: the one call every covered operation makes before it runs.

    Returns the key state the gate's "run now" depends on (see :func:`judged`), or None
    when the state does not matter (no approvals needed, or an approved request's run).
    """
    running = _running.get()
    if running is not None and running.covers(attempt):
        return None
    passed: str | None = None
    for gate in _gate:
        passed = gate(actor, attempt)
    return passed


@contextmanager
def judged(attempt: Covered, state: str | None) -> Iterator[None]:
    """Run the attempt's operation knowing which key state let it pass the gate (None: any state)."""
    mark = Judged(attempt.operation, attempt.key_id, state) if state is not None and attempt.key_id else None
    token = _judged.set(mark)
    try:
        yield
    finally:
        _judged.reset(token)


def confirm_state(operation: str, key_id: uuid.UUID, state: str) -> None:
    """Under the key's row lock: raise :class:`StateChanged` if the gate judged this operation on another state."""
    mark = _judged.get()
    if mark is not None and mark.operation == operation and mark.key_id == key_id and mark.state != state:
        raise StateChanged(f"{operation}: the key went from {mark.state} to {state} after the approval gate")


def current() -> Approved | None:
    """The approved request whose operation is running in this context, if any."""
    return _running.get()


@contextmanager
def executing(approved: Approved) -> Iterator[None]:
    """Run an approved request's operation: it passes the gate, and its audit events name the approvers."""
    token = _running.set(approved)
    try:
        yield
    finally:
        _running.reset(token)
