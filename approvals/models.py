"""Dual control (SPEC §12): each keystore's approval policy, and the requests waiting for approvals."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.identity import SYSTEM_ISSUER
from byok_portal.dual_control import ApprovalGroup
from keys.models import Key
from keystores.models import Keystore, Role

MAX_APPROVALS = 5
DEFAULT_APPROVER_ROLES = [Role.ADMIN.value, Role.CUSTODIAN.value]


def default_approver_roles() -> list[str]:
    return list(DEFAULT_APPROVER_ROLES)


def _count() -> models.PositiveSmallIntegerField[Any, Any]:
    return models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(MAX_APPROVALS)])


class ApprovalPolicy(models.Model):
    """How many approvals, from distinct people holding an approver role, each operation group needs in a keystore.

    A keystore without a row needs none (part one's behaviour). Changing it is itself
    an operation of the ``membership`` group, approved under the policy in force.
    """

    keystore = models.OneToOneField(Keystore, on_delete=models.CASCADE, related_name="approval_policy")
    destroy = _count()
    disable = _count()
    change_material = _count()
    export = _count()
    membership = _count()
    approver_roles = models.JSONField(default=default_approver_roles)
    expires_hours = models.PositiveIntegerField(default=24, validators=[MinValueValidator(1), MaxValueValidator(720)])
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Approval policy of {self.keystore}"

    def required(self, group: ApprovalGroup) -> int:
        return int(getattr(self, group.value))


class RequestState(models.TextChoices):
    """Where an approval request stands (SPEC §12): open while PENDING or APPROVED, ended otherwise."""

    PENDING = "PENDING", "Pending"
    APPROVED = "APPROVED", "Approved"
    EXECUTED = "EXECUTED", "Executed"
    REJECTED = "REJECTED", "Rejected"
    EXPIRED = "EXPIRED", "Expired"
    CANCELLED = "CANCELLED", "Cancelled"
    FAILED = "FAILED", "Failed"


OPEN_STATES = (RequestState.PENDING, RequestState.APPROVED)


class ApprovalRequest(models.Model):
    """One attempt at a covered operation, waiting for (or done with) its approvals.

    The requester is kept by ``(iss, sub)`` — the person, not the account — and the
    operation runs as them once ``required`` distinct people have approved.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operation = models.CharField(max_length=32)
    group = models.CharField(max_length=20, choices=[(g.value, g.value) for g in ApprovalGroup])
    keystore = models.ForeignKey(Keystore, on_delete=models.PROTECT, related_name="approval_requests")
    key = models.ForeignKey(Key, on_delete=models.PROTECT, null=True, blank=True, related_name="approval_requests")
    parameters = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    requested_by_iss = models.CharField(max_length=255)
    requested_by_sub = models.CharField(max_length=255)
    requested_by_name = models.CharField(max_length=255)
    required = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=RequestState.choices, default=RequestState.PENDING)
    reason = models.TextField(blank=True, default="")  # a rejection's reason
    result = models.JSONField(null=True, blank=True)  # the operation's outcome, or its error
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    # Set by the execution that claims an APPROVED request: a redelivered task finds it taken, until the
    # claim is older than BYOK_APPROVAL_LEASE_SECONDS (its worker died) and the run may be claimed again.
    started_at = models.DateTimeField(null=True, blank=True)
    # How many runs claimed it: each claim after the first takes over a run lost with its worker. A run
    # that kills its worker every time (the same crash, again and again) ends FAILED at BYOK_APPROVAL_MAX_RUNS.
    runs = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["state", "-created_at"], name="approval_by_state")]
        constraints = [
            # One open request per key: two people cannot queue conflicting changes to the same key.
            models.UniqueConstraint(
                fields=["key"],
                condition=models.Q(state__in=["PENDING", "APPROVED"]),
                name="one_open_approval_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.operation} ({self.state})"

    @property
    def requester(self) -> tuple[str, str]:
        return (self.requested_by_iss, self.requested_by_sub)

    @property
    def requester_active(self) -> bool:
        """Whether the requester may still act: the operation runs as them (the portal's own jobs always may)."""
        if self.requested_by_iss == SYSTEM_ISSUER:
            return True
        return self.requested_by is not None and self.requested_by.is_active


class Approval(models.Model):
    """One person's approval of a request; a person (``iss``, ``sub``) approves a request at most once."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="approvals")
    iss = models.CharField(max_length=255)
    sub = models.CharField(max_length=255)
    display_name = models.CharField(max_length=255)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("created_at", "id")
        constraints = [models.UniqueConstraint(fields=["request", "iss", "sub"], name="one_approval_per_person")]

    def __str__(self) -> str:
        return f"{self.display_name} approved {self.request_id}"
