"""The key lifecycle of SPEC §2, as one table.

Enforcement (services), the API's ``allowed_operations``, the buttons on the key
page and the OpenAPI descriptions all read :data:`LIFECYCLE`. Adding an operation
is one row here plus one service function.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState, KmsState, Operation
from keys.specs import DEFAULT_SPEC, SPECS, KeySpec

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
    # The key specs the operation exists for (SPEC §9): every spec unless a row says otherwise
    # (native rotation, for one, is for symmetric keys only).
    specs: frozenset[str] = frozenset(SPECS)
    # A repair: offered (on the key page, ahead of the rest) only while KMS reports this state,
    # never listed in ``allowed_operations`` (it is no routine operation). See :func:`repairs_for`.
    repairs: KmsState | None = None
    # Only for multi-Region keys (SPEC §11): AWS cannot make a single-Region key multi-Region.
    multi_region_only: bool = False


def _row(
    operation: Operation,
    allowed: set[KeyState] | frozenset[KeyState],
    noop: set[KeyState] | frozenset[KeyState],
    target: KeyState | None,
    label: str,
    consequence: str,
    *,
    offered: bool = True,
    specs: frozenset[str] = frozenset(SPECS),
    repairs: KmsState | None = None,
    multi_region_only: bool = False,
) -> tuple[Operation, Transition]:
    transition = Transition(
        operation,
        frozenset(allowed),
        frozenset(noop),
        target,
        label,
        consequence,
        offered,
        specs,
        repairs,
        multi_region_only,
    )
    return operation, transition


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
            Operation.ADD_REPLICA,
            {S.ACTIVE},
            set(),
            None,
            "Add a replica region",
            "A replica of this multi-Region key is created in another region and given the same key material: "
            "data encrypted in any of the key's regions decrypts in the new one. Tags and alias are applied there.",
            multi_region_only=True,
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
            Operation.ROTATE,
            {S.ACTIVE},
            set(),
            None,
            "Rotate material",
            "New key material is generated and imported into this same KMS key, and AWS rotates to it: the key "
            "id, ARN and alias stay, new ciphertexts use the new material, existing ones still decrypt with "
            "theirs (the portal keeps every version). AWS allows 25 rotations per key; after that, renew it.",
            specs=frozenset({KeySpec.SYMMETRIC_DEFAULT}),
        ),
        # The re-import task's operation (SPEC §10, ``material_valid_days``): only where KMS holds the material.
        _row(
            Operation.REIMPORT,
            {S.ACTIVE, S.REPLACED},
            {S.INACTIVE, S.PENDING_DELETION},
            None,
            "Re-import material",
            "Every material version is imported into KMS again with a new expiry date (ValidTo), before AWS "
            "deletes it: the key keeps working without interruption.",
            offered=False,
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
        # Offered only for a key whose KMS key is gone (KMS state MISSING): see repairs_for.
        _row(
            Operation.RECREATE,
            {S.ACTIVE, S.INACTIVE, S.REPLACED},
            set(),
            None,
            "Recreate in KMS",
            "A new KMS key is created in the keystore's account and given this key's own material (same KCV), "
            "its alias and tags; its state follows the portal's. The KMS key ARN changes: applications must use "
            "the alias or the new ARN. Data encrypted under the vanished KMS key stays undecryptable: AWS binds "
            "every ciphertext to the KMS key that made it.",
            offered=False,
            repairs=KmsState.MISSING,
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


# "Cannot <phrase> a key in state X": the operations whose name is not a verb that takes "a key".
_REFUSAL_PHRASES = {
    Operation.UPLOAD: "re-upload the material of",
    Operation.REIMPORT: "re-import the material of",
    Operation.SCHEDULE_DELETION: "schedule the deletion of",
    Operation.CANCEL_DELETION: "cancel the deletion of",
    Operation.PREPARE_DOWNLOAD: "prepare a download of",
    Operation.UPDATE: "edit",
    Operation.CLEANUP: "clean up",
}


class InvalidState(Conflict):
    """An operation was asked of a key in a state the lifecycle table refuses."""

    def __init__(self, operation: Operation, state: KeyState) -> None:
        self.operation = operation
        self.state = state
        allowed_states = sorted(str(s) for s in LIFECYCLE[operation].allowed)
        super().__init__(
            f"Cannot {_REFUSAL_PHRASES.get(operation, operation.value)} a key in state {state}; "
            f"allowed in: {', '.join(allowed_states) or 'no state'}.",
            state=str(state),
            allowed_states=allowed_states,
        )


class UnsupportedForKeySpec(Conflict):
    """An operation was asked of a key whose spec cannot do it (SPEC §9)."""

    code = "unsupported_for_key_spec"

    def __init__(self, operation: Operation, key_spec: str, state: str) -> None:
        self.operation = operation
        super().__init__(
            f"Cannot {operation.value.replace('_', ' ')} a {key_spec} key: the operation is for "
            f"{', '.join(sorted(LIFECYCLE[operation].specs))} keys only.",
            state=state,
            key_spec=key_spec,
        )


def decide(operation: Operation, state: str, key_spec: str = DEFAULT_SPEC) -> bool:
    """True if ``operation`` must run in ``state``, False if it is a no-op; raise :class:`InvalidState` otherwise.

    An operation the key's spec cannot do is refused (:class:`UnsupportedForKeySpec`) whatever the state.
    """
    row = LIFECYCLE[operation]
    if key_spec not in row.specs:
        raise UnsupportedForKeySpec(operation, key_spec, state)
    key_state = KeyState(state)
    if key_state in row.allowed:
        return True
    if key_state in row.noop:
        return False
    raise InvalidState(operation, key_state)


def allowed_operations(
    state: str, key_spec: str = DEFAULT_SPEC, *, download_prepared: bool | None = None, multi_region: bool = False
) -> list[Operation]:
    """Operations that would take effect on a key of ``key_spec`` in ``state``, in table order.

    No-ops are valid too (they succeed and change nothing) but are not listed: a
    button that cannot do anything is noise. Neither are operations the spec cannot do.
    For the same reason, with ``download_prepared=False`` ``download`` is left out:
    nothing is there to download. Operations for multi-Region keys only are listed for those.
    """
    key_state = KeyState(state)
    return [
        op
        for op, row in LIFECYCLE.items()
        if row.offered
        and key_state in row.allowed
        and key_spec in row.specs
        and not (op is Operation.DOWNLOAD and download_prepared is False)
        and (multi_region or not row.multi_region_only)
    ]


def repairs_for(state: str, kms_state: str, key_spec: str = DEFAULT_SPEC) -> list[Operation]:
    """The repairs a key of ``key_spec`` in ``state`` needs while KMS reports ``kms_state`` (recreate for a vanished
    KMS key).

    The key page offers them first: the other operations all need a KMS key in step.
    """
    key_state = KeyState(state)
    return [
        op
        for op, row in LIFECYCLE.items()
        if row.repairs == kms_state and key_state in row.allowed and key_spec in row.specs
    ]


# --- rules derived from the table ------------------------------------------------------
# Each written once, here: the pages, the dashboard, the API, cleanup, reconciliation and
# the expiry warnings all read them (through ``keys.selectors`` for queries).

# What KMS should report for a key in each portal state (SPEC §2); anything else is drift.
EXPECTED_KMS_STATE: dict[KeyState, KmsState] = {
    KeyState.ACTIVE: KmsState.ENABLED,
    KeyState.INACTIVE: KmsState.EMPTY,
    KeyState.REPLACED: KmsState.ENABLED,
    KeyState.PENDING_DELETION: KmsState.PENDING_DELETION,
}

# Expiry matters for keys in use: a REPLACED key was renewed already, one pending deletion is on its way out.
EXPIRY_STATES = frozenset({KeyState.ACTIVE, KeyState.INACTIVE})


def expected_kms_state(state: str) -> KmsState | None:
    """The KMS state a key in portal ``state`` should have (None: no expectation, e.g. DELETED)."""
    return EXPECTED_KMS_STATE.get(KeyState(state))


def expiry_horizon(today: dt.date) -> dt.date:
    """Keys expiring on or before this date are "expiring soon" (``BYOK_EXPIRY_WARNING_DAYS`` ahead)."""
    return today + dt.timedelta(days=settings.BYOK_EXPIRY_WARNING_DAYS)


def is_expiring(state: str, expires: dt.date | None, today: dt.date) -> bool:
    return expires is not None and expires <= expiry_horizon(today) and state in EXPIRY_STATES


def expiring_q(today: dt.date) -> Q:
    """Keys in use whose cryptoperiod ends within the warning window (or has ended)."""
    return Q(expires__isnull=False, expires__lte=expiry_horizon(today), state__in=EXPIRY_STATES)


def kms_mismatch_q() -> Q:
    """Keys whose last observed KMS state is not the one their portal state implies."""
    query = Q()
    for state, kms_state in EXPECTED_KMS_STATE.items():
        query |= Q(state=state) & ~Q(kms_state=kms_state)
    return query


def needs_attention_q() -> Q:
    """Reconciliation found drift, or the KMS state does not match the portal state."""
    return (~Q(drift=[]) | kms_mismatch_q()) & ~Q(state=KeyState.DELETED)


def due_for_cleanup_q(now: dt.datetime) -> Q:
    """Keys cleanup may take: in a state the table allows cleanup in, their waiting period over."""
    return Q(state__in=LIFECYCLE[Operation.CLEANUP].allowed, deletion_date__lte=now)


# --- the rotation policy and material expiry (SPEC §10) ------------------------------------
# The rotation job, the dashboard, the key page and the API read these.

# Keys the rotation policy acts on: those in use with their own KMS key (a REPLACED key was renewed already).
ROTATION_STATES = frozenset({KeyState.ACTIVE})


def due_for_rotation_q(today: dt.date) -> Q:
    """Keys the rotation job rotates today: their ``next_rotation_date`` has come."""
    return Q(state__in=ROTATION_STATES, next_rotation_date__lte=today)


def is_rotation_overdue(state: str, next_rotation_date: dt.date | None, today: dt.date) -> bool:
    """Past its date: the daily job should have rotated it (it failed, or the key was flagged)."""
    return next_rotation_date is not None and next_rotation_date < today and state in ROTATION_STATES


def rotation_overdue_q(today: dt.date) -> Q:
    return Q(state__in=ROTATION_STATES, next_rotation_date__lt=today)


def rotation_due_soon_q(today: dt.date) -> Q:
    """Due today or within the warning window (``BYOK_EXPIRY_WARNING_DAYS``), not overdue yet."""
    return Q(state__in=ROTATION_STATES, next_rotation_date__gte=today, next_rotation_date__lte=expiry_horizon(today))


# Keys whose material KMS holds (it is enabled): only there does a material's ValidTo matter.
MATERIAL_IN_KMS_STATES = frozenset(state for state, kms in EXPECTED_KMS_STATE.items() if kms == KmsState.ENABLED)


def reimport_margin(material_valid_days: int | None) -> dt.timedelta:
    """How long before its ValidTo a material is re-imported: ``BYOK_REIMPORT_MARGIN_DAYS``, or half its validity
    when that is shorter (a material valid for one day would otherwise be re-imported at every run)."""
    margin = dt.timedelta(days=settings.BYOK_REIMPORT_MARGIN_DAYS)
    if material_valid_days is None:
        return margin
    return min(margin, dt.timedelta(days=material_valid_days) / 2)


def reimport_due(valid_to: dt.datetime | None, material_valid_days: int | None, now: dt.datetime) -> bool:
    """A material KMS holds must be imported again: its ValidTo is near, or its expiry is not what the policy says.

    A key given ``material_valid_days`` after its material was imported (non-expiring) gets an expiry at the next
    run; one whose policy was removed gets its materials made non-expiring before AWS deletes them.
    """
    if valid_to is None:
        return material_valid_days is not None
    return material_valid_days is None or valid_to <= now + reimport_margin(material_valid_days)


def material_expiry_horizon(now: dt.datetime) -> dt.datetime:
    """Materials expiring by then are "expiring soon" (``BYOK_REIMPORT_MARGIN_DAYS`` ahead): due for re-import."""
    return now + dt.timedelta(days=settings.BYOK_REIMPORT_MARGIN_DAYS)


def _held_q() -> Q:
    # The versions KMS must hold (permanently associated: CURRENT, NON_CURRENT) of keys whose KMS key holds them.
    return Q(state__in=("CURRENT", "NON_CURRENT"), key__state__in=MATERIAL_IN_KMS_STATES)


def material_expiring_q(now: dt.datetime) -> Q:
    """Material versions (``KeyMaterial`` rows) KMS holds whose ValidTo is within the margin, or past (the
    dashboard's "material expiring"): if they are still there, the re-import is late or failing."""
    return _held_q() & Q(valid_to__lte=material_expiry_horizon(now))


def reimport_candidates_q(now: dt.datetime) -> Q:
    """Versions that may need a re-import: expiring (:func:`material_expiring_q`), or whose key's policy wants an
    expiry they lack, or lacks one they have. A superset of :func:`reimport_due`, which may take a shorter margin.
    """
    unwanted = Q(valid_to__isnull=True, key__material_valid_days__isnull=False) | Q(
        valid_to__isnull=False, key__material_valid_days__isnull=True
    )
    return material_expiring_q(now) | (_held_q() & unwanted)
