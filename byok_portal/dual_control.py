"""Dual control's hook (SPEC §12): a covered operation asks the approval gate before it runs.

Every door runs an operation through one place — the key operations registry
(``keys.operations``) or the keystore service that does it — and that place calls
:func:`ask` with the operation's group. The gate itself (the approvals app, which sits
above every app it guards) is handed down at start-up with :func:`gate_with`: under a
policy that needs approvals it records an approval request and raises
:class:`ApprovalPending`, which each door answers as "202, waiting for approval".

An approved request runs its operation inside :func:`executing`: that one operation on
that one target passes the gate, and the audit trail names its approvers (:func:`current`).
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


# The gate takes the acting identity (``accounts.identity.Actor``) and the attempt; it returns to let
# the operation run now, or raises (ApprovalPending, or a refusal).
Gate = Callable[[Any, Covered], None]
_gate: list[Gate] = []
_running: ContextVar[Approved | None] = ContextVar("byok_approved_operation", default=None)


def gate_with(gate: Gate) -> None:
    """Install the approval gate (the approvals app's ``ready()``)."""
    _gate[:] = [gate]


def ask(actor: Any, attempt: Covered) -> None:
    """Let ``attempt`` run now, or raise: the one call every covered operation makes before it runs."""
    running = _running.get()
    if running is not None and running.covers(attempt):
        return
    for gate in _gate:
        gate(actor, attempt)


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
