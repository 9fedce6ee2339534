"""Bulk jobs (SPEC §14): one lifecycle operation over many keys, run by Celery within the KMS quotas."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class JobState(models.TextChoices):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class ItemState(models.TextChoices):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # The key's approval policy asked for approvals: an approval request waits, and runs the operation once
    # approved. Over for the job (nothing left for it to do), and neither done nor failed.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"


FINISHED_JOB_STATES = (JobState.DONE, JobState.CANCELLED, JobState.FAILED)
FINISHED_ITEM_STATES = (ItemState.DONE, ItemState.FAILED, ItemState.CANCELLED, ItemState.AWAITING_APPROVAL)


class Job(models.Model):
    """A bulk job: ``operation`` with ``parameters`` for each of its items, as its requester.

    The requester's identity is kept as the audit trail names people (issuer, subject,
    name), so every item runs as the person who asked, with their roles checked per key.
    ``done`` and ``failed`` count finished items; they move with the items' states in
    the same transaction.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operation = models.CharField(max_length=32)
    parameters = models.JSONField(default=dict, blank=True)
    selection = models.JSONField(default=dict, blank=True)  # what was asked: key ids, a filter, or names
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    awaiting_approval = models.PositiveIntegerField(default=0)
    settled = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    requester_iss = models.CharField(max_length=255)
    requester_sub = models.CharField(max_length=255)
    requester_name = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["requester_iss", "requester_sub", "-created_at"], name="jobs_by_requester")]

    def __str__(self) -> str:
        return f"{self.operation} × {self.total} ({self.state})"


class JobItem(models.Model):
    """One key of a job (or, for a create job, one key to create) and what happened to it.

    ``lane`` is the keystore: items of one keystore share its account's KMS quotas and are
    worked by that keystore's lane tasks. A worker claims an item (``RUNNING``, with its
    task id and the time); an item whose claim is older than the lease, or whose task was
    redelivered after its worker died, is checked against the audit trail before it is run
    again, so that no key is done twice.

    ``settled_seq`` is the item's place in the order the job's items ended (1, 2, …; set
    under the job's row lock, so in commit order): the cursor with which a poll asks for
    the results that ended since its last look. An item waiting for approval names its
    ``approval_request``.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()
    lane = models.UUIDField()  # keystore id
    key_id = models.UUIDField(null=True, blank=True)  # the target; for a create, the key created
    name = models.CharField(max_length=200, blank=True, default="")  # a create's key name
    state = models.CharField(max_length=24, choices=ItemState.choices, default=ItemState.PENDING)
    outcome = models.CharField(max_length=32, blank=True, default="")  # SUCCESS/NOOP, or the error code
    message = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    settled_seq = models.PositiveIntegerField(null=True, blank=True)
    approval_request = models.ForeignKey(
        "approvals.ApprovalRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["job", "position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "position"], name="job_item_position_unique"),
            models.UniqueConstraint(fields=["job", "settled_seq"], name="job_item_settled_seq_unique"),
        ]
        indexes = [models.Index(fields=["job", "lane", "state", "position"], name="job_items_to_claim")]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.position} {self.state}"
