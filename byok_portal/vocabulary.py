"""The words every app speaks: key and KMS states, operations, outcomes (SPEC §1, §2, §4).

They sit in the kernel so that the audit trail, accounts and keystores can name an
operation or an outcome without importing ``keys``. What the words *mean* for a key
(which operation is allowed in which state) is the lifecycle table, ``keys/lifecycle.py``.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class KeyState(models.TextChoices):
    """The portal state of a key (SPEC §2)."""

    ACTIVE = "ACTIVE", "Active"
    INACTIVE = "INACTIVE", "Inactive"
    REPLACED = "REPLACED", "Replaced"
    PENDING_DELETION = "PENDING_DELETION", "Pending deletion"
    DELETED = "DELETED", "Deleted"


class KmsState(models.TextChoices):
    """The last observed state of the KMS key (AWS key states mapped as in SPEC §1)."""

    ENABLED = "ENABLED", "Enabled"
    DISABLED = "DISABLED", "Disabled"
    EMPTY = "EMPTY", "No key material"
    PENDING_DELETION = "PENDING_DELETION", "Pending deletion"
    # AWS answered NotFoundException: the KMS key no longer exists (AWS has no key state for that).
    MISSING = "MISSING", "No KMS key"
    UNKNOWN = "UNKNOWN", "Unknown"


class Operation(StrEnum):
    """Everything the audit trail can say was done; the key operations are rows of the lifecycle table."""

    CREATE = "create"
    DEACTIVATE = "deactivate"
    ACTIVATE = "activate"
    UPLOAD = "upload"
    RENEW = "renew"
    ROTATE = "rotate"
    REIMPORT = "reimport"
    SCHEDULE_DELETION = "schedule_deletion"
    CANCEL_DELETION = "cancel_deletion"
    RECREATE = "recreate"
    ADD_REPLICA = "add_replica"
    PREPARE_DOWNLOAD = "prepare_download"
    DOWNLOAD = "download"
    WITHDRAW_DOWNLOAD = "withdraw_download"
    UPDATE = "update"
    CLEANUP = "cleanup"
    DELETE_KEYSTORE = "delete_keystore"
    # Keystore-level and background operations that are audited but not key transitions.
    CREATE_KEYSTORE = "create_keystore"
    UPDATE_KEYSTORE = "update_keystore"
    TEST_CONNECTION = "test_connection"
    GRANT = "grant"
    REVOKE = "revoke"
    RECONCILE = "reconcile"
    EXPIRY_WARNING = "expiry_warning"
    ROTATE_KEK = "rotate_kek"
    CREATE_USER = "create_user"
    UPDATE_USER = "update_user"
    CREATE_TOKEN = "create_token"  # noqa: S105 - an operation's name, not a secret
    REVOKE_TOKEN = "revoke_token"  # noqa: S105 - an operation's name, not a secret
    UNEXPECTED_ERROR = "unexpected_error"
    # Dual control (SPEC §12): the policy, and each step of an approval request.
    UPDATE_APPROVAL_POLICY = "update_approval_policy"
    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL_APPROVAL = "cancel_approval"
    EXPIRE_APPROVAL = "expire_approval"
    EXECUTE_APPROVAL = "execute_approval"
    END_APPROVAL = "end_approval"  # an admin ends an approved request whose run stalled
    # Notification channels of a keystore (SPEC §15).
    CREATE_WEBHOOK = "create_webhook"
    DELETE_WEBHOOK = "delete_webhook"
    TEST_WEBHOOK = "test_webhook"
    BULK_JOB = "bulk_job"
    CANCEL_BULK_JOB = "cancel_bulk_job"


class Outcome(models.TextChoices):
    """How an audited attempt ended: a no-op succeeded without changing anything."""

    SUCCESS = "success", "Success"
    NOOP = "noop", "No-op"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"
