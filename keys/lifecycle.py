"""The key lifecycle of SPEC §2, as one table.

Enforcement (services), the API's ``allowed_operations``, the buttons on the key
page and the OpenAPI descriptions all read :data:`LIFECYCLE`. Adding an operation
is one row here plus one service function.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.db import models

from byok_portal.errors import Conflict


class KeyState(models.TextChoices):
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
    UNKNOWN = "UNKNOWN", "Unknown"


class Operation(StrEnum):
    CREATE = "create"
    DEACTIVATE = "deactivate"
    ACTIVATE = "activate"
    UPLOAD = "upload"
    RENEW = "renew"
    SCHEDULE_DELETION = "schedule_deletion"
    CANCEL_DELETION = "cancel_deletion"
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


ALL_BUT_DELETED = frozenset(set(KeyState) - {KeyState.DELETED})


@dataclass(frozen=True)
class Transition:
    """One row of the lifecycle table."""

    operation: Operation
    allowed: frozenset[KeyState]
    noop: frozenset[KeyState]
    # None: the portal state does not change.
    target: KeyState | None
    label: str
    # What a person must understand before confirming, shown on the key page.
    consequence: str
    # Shown only to people who can act (custodians and admins); system-only rows are not offered.
    offered: bool = True


def _row(
    operation: Operation,
    allowed: set[KeyState] | frozenset[KeyState],
    noop: set[KeyState] | frozenset[KeyState],
    target: KeyState | None,
    label: str,
    consequence: str,
    *,
    offered: bool = True,
) -> tuple[Operation, Transition]:
    return operation, Transition(operation, frozenset(allowed), frozenset(noop), target, label, consequence, offered)


S = KeyState
LIFECYCLE: dict[Operation, Transition] = dict(
    [
        _row(
            Operation.DEACTIVATE,
            {S.ACTIVE},
            {S.INACTIVE},
            S.INACTIVE,
            "Deactivate",
            "The KMS key is disabled and its key material deleted from AWS: nothing can encrypt or decrypt "
            "with it until you activate it again. Services that cached data keys may keep working for a while.",
        ),
        _row(
            Operation.ACTIVATE,
            {S.INACTIVE},
            {S.ACTIVE},
            S.ACTIVE,
            "Activate",
            "The same key material is imported into KMS again and the key is enabled: it encrypts and decrypts again.",
        ),
        _row(
            Operation.UPLOAD,
            {S.ACTIVE, S.REPLACED},
            set(),
            None,
            "Re-upload material",
            "The same key material is imported into KMS again, repairing a KMS key that lost it.",
        ),
        _row(
            Operation.RENEW,
            {S.ACTIVE},
            set(),
            S.REPLACED,
            "Renew",
            "A new key with fresh material is created and the alias moves to it. This key becomes REPLACED and "
            "stays enabled, so existing ciphertexts still decrypt.",
        ),
        _row(
            Operation.SCHEDULE_DELETION,
            {S.ACTIVE, S.INACTIVE, S.REPLACED},
            {S.PENDING_DELETION, S.DELETED},
            S.PENDING_DELETION,
            "Schedule deletion",
            "KMS stops using the key at once and deletes it when the waiting period ends; the portal then destroys "
            "its copy of the material. Data encrypted under it becomes unrecoverable. You can cancel until then.",
        ),
        _row(
            Operation.CANCEL_DELETION,
            {S.PENDING_DELETION},
            set(),
            S.INACTIVE,
            "Cancel deletion",
            "The deletion is cancelled; the key comes back INACTIVE (disabled, without material in KMS).",
        ),
        _row(
            Operation.PREPARE_DOWNLOAD,
            ALL_BUT_DELETED,
            set(),
            None,
            "Prepare download",
            "You register a public key; a second custodian can then download the material wrapped for it, once.",
        ),
        _row(
            Operation.DOWNLOAD,
            ALL_BUT_DELETED,
            set(),
            None,
            "Download",
            "The key material is released wrapped with the prepared public key. The preparation is used up.",
        ),
        _row(
            Operation.WITHDRAW_DOWNLOAD,
            ALL_BUT_DELETED,
            set(),
            None,
            "Withdraw download",
            "The prepared download is withdrawn: nobody can download it, and a new download can be prepared.",
            # Offered with the pending preparation it withdraws, to its preparer and keystore admins.
            offered=False,
        ),
        _row(
            Operation.UPDATE,
            {S.ACTIVE, S.INACTIVE},
            set(),
            None,
            "Edit",
            "Name, expiry, tags and alias change; tags and alias are applied to the KMS key.",
        ),
        _row(
            Operation.CLEANUP,
            {S.PENDING_DELETION},
            set(),
            S.DELETED,
            "Clean up",
            "The portal destroys its copy of the material. This cannot be undone.",
            offered=False,
        ),
    ]
)


class InvalidState(Conflict):
    """An operation was asked of a key in a state the lifecycle table refuses."""

    def __init__(self, operation: Operation, state: KeyState) -> None:
        self.operation = operation
        self.state = state
        allowed_states = sorted(str(s) for s in LIFECYCLE[operation].allowed)
        super().__init__(
            f"Cannot {operation.value.replace('_', ' ')} a key in state {state}; "
            f"allowed in: {', '.join(allowed_states) or 'no state'}.",
            state=str(state),
            allowed_states=allowed_states,
        )


def decide(operation: Operation, state: str) -> bool:
    """True if ``operation`` must run in ``state``, False if it is a no-op; raise :class:`InvalidState` otherwise."""
    row = LIFECYCLE[operation]
    key_state = KeyState(state)
    if key_state in row.allowed:
        return True
    if key_state in row.noop:
        return False
    raise InvalidState(operation, key_state)


def allowed_operations(state: str) -> list[Operation]:
    """Operations that would take effect on a key in ``state``, in table order.

    No-ops are valid too (they succeed and change nothing) but are not listed: a
    button that cannot do anything is noise.
    """
    key_state = KeyState(state)
    return [op for op, row in LIFECYCLE.items() if row.offered and key_state in row.allowed]
