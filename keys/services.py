"""Key lifecycle operations (SPEC §2): the only code that changes a key.

Every operation has the same shape (:func:`_operate`): lock the key row, check
the caller's role and the lifecycle table, make the KMS calls in the order AWS
requires, save, and record the audit event in the same transaction. Refusals
and AWS failures are recorded in a transaction of their own, after the failed
work has rolled back, so they survive it.

The row lock is held across the KMS calls of one key. That is what serialises
concurrent operations on a key (exactly one wins; the others then see the new
state), and it only ever blocks work on that same key. Each KMS step is written
so that re-running a half-finished operation converges: a crash leaves the old
portal state and a partially changed KMS key, and the retry finishes the job.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts.identity import Actor
from audit.services import record, record_refusal
from byok_portal import aws, dual_control
from byok_portal.aws import AwsError, KmsSession
from byok_portal.errors import Conflict, NotFound, PermissionRefused, ServiceError, TwoPersonRuleViolation
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys import aliases, custody, materials, regions, rotation_policy
from keys.lifecycle import LIFECYCLE, InvalidState, decide
from keys.materials import INVALID_STATE_CODE
from keys.materials import tolerate_invalid_state as _tolerate_invalid_state
from keys.models import Key, KeyMaterial, MaterialState, PendingCreation
from keys.regions import Region
from keys.specs import DEFAULT_SPEC, spec_of, validate_spec_and_usage
from keys.validation import validate_alias, validate_tags
from keystores.models import (
    MAX_MATERIAL_VALID_DAYS,
    MAX_ROTATION_PERIOD_DAYS,
    MIN_MATERIAL_VALID_DAYS,
    MIN_ROTATION_PERIOD_DAYS,
    ROLE_RANK,
    Keystore,
    KeystoreState,
    Role,
    RotationOnLimit,
)
from keystores.selectors import require_role, role_in

logger = logging.getLogger("byok.keys")

NOT_FOUND_CODE = "NotFoundException"
MIN_WINDOW, MAX_WINDOW = 7, 30


# --- the common shape ---------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """What an operation did, for the door that asked: the key it leaves behind and how it ended.

    ``outcome`` is ``SUCCESS``, or ``NOOP`` when the key already was where the operation
    leads (the same outcome the audit trail records). For a renewal ``key`` is the new key.
    """

    key: Key
    outcome: Outcome

    @property
    def changed(self) -> bool:
        return self.outcome != Outcome.NOOP


def _check_role(actor: Actor, keystore: Keystore, role: Role) -> None:
    # The portal's own jobs (cleanup, reconciliation) act without a user.
    if actor.user is None:
        return
    try:
        require_role(actor.user, keystore, role)
    except NotFound as exc:
        # The same words as for a key that does not exist: an outsider learns nothing.
        raise NotFound("Key not found.") from exc


def authorize(*, actor: Actor, key_id: uuid.UUID, operation: Operation, role: Role = Role.CUSTODIAN) -> Key:
    """The key, if ``actor`` may run ``operation`` on it; otherwise an audited refusal.

    For callers that judge input before the operation runs (API bodies, page forms):
    they ask here first, so that an outsider learns nothing from how the input is
    judged, and the refusal is audited exactly as the operation itself would audit it.
    """
    key = Key.objects.select_related("keystore").filter(pk=key_id).first() if _is_uuid(key_id) else None
    if key is None:
        raise NotFound("Key not found.")
    try:
        _check_role(actor, key.keystore, role)
    except (NotFound, PermissionRefused) as exc:
        _record_refusal(actor, operation, key.pk, exc)
        raise
    return key


def _lock_key(key_id: uuid.UUID) -> Key:
    try:
        key_uuid = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id))
    except ValueError as exc:
        raise NotFound("Key not found.") from exc
    key = Key.objects.select_for_update(of=("self",)).select_related("keystore").filter(pk=key_uuid).first()
    if key is None:
        raise NotFound("Key not found.")
    return key


def _record_refusal(actor: Actor, operation: Operation, key_id: uuid.UUID, exc: ServiceError) -> None:
    key = Key.objects.select_related("keystore").filter(pk=key_id).first() if _is_uuid(key_id) else None
    if key is None:
        return  # nothing to attach the event to, and nothing was revealed
    record_refusal(actor=actor, operation=operation, exc=exc, key=key, state=key.state)


def _record_failure(
    actor: Actor, operation: Operation, key_id: uuid.UUID, exc: AwsError, request_ids: list[str]
) -> None:
    """After an AWS failure: the portal state stays as it was; the KMS state is no longer known.

    Unless AWS said the KMS key does not exist (or it was known not to): every step names
    the key's own KMS key, so NotFoundException means it is gone, and the key page then
    offers the one operation that repairs that (:func:`key_recreate`).
    """
    with transaction.atomic():
        key = _lock_key(key_id)
        # A multi-Region key: each region keeps what it reached; only the failed one becomes unknown.
        details = regions.note_failure(key, exc)
        if details is None:
            gone = exc.code == NOT_FOUND_CODE or key.kms_state == KmsState.MISSING
            key.kms_state = KmsState.MISSING if gone else KmsState.UNKNOWN
        key.save(update_fields=["kms_state", "updated_at"])
        record(
            actor=actor,
            operation=operation,
            outcome=Outcome.FAILED,
            key=key,
            reason=exc.code,
            state_before=key.state,
            state_after=key.state,
            kms_request_ids=request_ids,
            error=f"{exc.operation}: {exc.code}: {exc.message}" + (f" (in {exc.region})" if details else ""),
            details=details,
        )
    logger.warning(
        "kms operation failed",
        extra={"operation": str(operation), "key_id": str(key_id), "aws_code": exc.code, "aws_op": exc.operation},
    )


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


Step = Callable[[Key, KmsSession], dict[str, Any] | None]


def _operate(
    actor: Actor,
    key_id: uuid.UUID,
    operation: Operation,
    step: Step,
    *,
    role: Role = Role.CUSTODIAN,
    needs_kms: bool = True,
) -> Done:
    """Run one lifecycle operation on one key; see the module docstring."""
    request_ids: list[str] = []
    try:
        with transaction.atomic():
            key = _lock_key(key_id)
            _check_role(actor, key.keystore, role)
            # The approval gate judged the key without this lock: it must still be in the state judged.
            dual_control.confirm_state(operation.value, key.pk, key.state)
            before = key.state
            if not decide(operation, key.state, key.key_spec):
                record(
                    actor=actor,
                    operation=operation,
                    outcome=Outcome.NOOP,
                    key=key,
                    state_before=before,
                    state_after=before,
                )
                return Done(key, Outcome.NOOP)
            kms = aws.kms_for(key.keystore, operation=operation, acting=actor) if needs_kms else None
            if kms is not None:
                request_ids = kms.request_ids
            details = step(key, kms)  # type: ignore[arg-type]
            target = LIFECYCLE[operation].target
            if target is not None:
                key.state = target
            key.updated_by = actor.user
            key.save()
            record(
                actor=actor,
                operation=operation,
                outcome=Outcome.SUCCESS,
                key=key,
                state_before=before,
                state_after=key.state,
                kms_request_ids=request_ids,
                details=details,
            )
            return Done(key, Outcome.SUCCESS)
    except (InvalidState, PermissionRefused, NotFound, TwoPersonRuleViolation, Conflict) as exc:
        _record_refusal(actor, operation, key_id, exc)
        raise
    except AwsError as exc:
        _record_failure(actor, operation, key_id, exc, request_ids)
        raise


# --- idempotent KMS steps -------------------------------------------------------


def _disable_and_delete_material(key: Key, kms: KmsSession, arn: str) -> None:
    """Disable first (DisableKey fails once the key is PendingImport, NOTES.md), then delete every material.

    One KMS key target (one region's session and ARN). A key already PendingImport may be a
    retry that deleted some of its materials before it stopped: the deletion goes on with
    whatever KMS still holds.
    """
    try:
        kms.disable(materials.kms_key_id(arn))
    except AwsError as exc:
        _tolerate_invalid_state(kms, materials.kms_key_id(arn), exc, {KmsState.EMPTY})
    materials.delete_all_materials(kms, arn, key)


def _withdraw_pending_versions(key: Key) -> None:
    """A staged rotation cannot finish once its material left KMS: the portal forgets it too."""
    KeyMaterial.objects.filter(key=key, state=MaterialState.PENDING_ROTATION).delete()


# --- operations -----------------------------------------------------------------


def key_deactivate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    def step(key: Key, kms: KmsSession) -> None:
        def in_region(region: Region) -> KmsState:
            _disable_and_delete_material(key, region.kms, region.kms_key_arn)
            return KmsState.EMPTY

        regions.each_region(key, kms, in_region)
        _withdraw_pending_versions(key)
        materials.forget_expiries(key)

    return _operate(actor, key_id, Operation.DEACTIVATE, step)


def _reimport_and_enable(key: Key, kms: KmsSession, *, only_missing: bool = False) -> dict[str, Any]:
    """Activate and upload alike: every missing material version back into KMS in every region, each enabled.

    ``only_missing`` (upload of a multi-Region key): regions whose KMS key is enabled keep
    theirs untouched; only the ones that lost material are repaired.
    """
    imported: dict[str, list[int]] = {}

    def in_region(region: Region) -> KmsState:
        if region.replica is not None:
            region.replica.drift = []
        if only_missing and key.multi_region and region.kms.describe(region.kms_key_id).state == KmsState.ENABLED:
            return KmsState.ENABLED
        imported[region.name] = list(materials.import_missing_materials(region.kms, region.kms_key_arn, key).versions)
        region.kms.enable(region.kms_key_id)
        return KmsState.ENABLED

    regions.each_region(key, kms, in_region)
    key.drift = []  # whatever reconciliation found missing is back
    if not key.multi_region:
        return {"versions_imported": imported.get(key.keystore.region, [])}
    return {"versions_imported": imported}


def key_activate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    return _operate(actor, key_id, Operation.ACTIVATE, _reimport_and_enable)


def key_upload(*, actor: Actor, key_id: uuid.UUID) -> Done:
    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        return _reimport_and_enable(key, kms, only_missing=True)

    return _operate(actor, key_id, Operation.UPLOAD, step)


def key_reimport(*, actor: Actor, key_id: uuid.UUID) -> Done:
    """Import every material version KMS holds again, in every region, with a new ValidTo (SPEC §10).

    The re-import task's operation for keys with ``material_valid_days``, before AWS deletes
    the material (a key whose non-current material expires stops working in AWS). The new
    expiry follows the key's policy now: a policy removed since makes the material
    non-expiring. Material that expired meanwhile is restored by the same import.
    """

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        versions = materials.held_versions(key)
        valid_to = materials.expiry_for(key.material_valid_days)

        done: list[str] = []

        def in_region(region: Region) -> KmsState | None:
            materials.reimport_all(region.kms, region.kms_key_arn, key, versions, valid_to)
            done.append(region.name)
            recorded = key.kms_state if region.replica is None else region.replica.kms_state
            # Material that had expired is back, and AWS enabled the key again: say so without waiting for
            # reconciliation. A key seen enabled stays as it was (the import changes nothing else).
            return None if recorded == KmsState.ENABLED else region.kms.describe(region.kms_key_id).state

        regions.each_region(key, kms, in_region)
        for version in versions:
            version.valid_to = valid_to  # every region now has this ValidTo
            version.imported_at = timezone.now()
            version.save(update_fields=["kms_key_material_id", "valid_to", "imported_at"])
        key.kms_checked_at = timezone.now()
        return {
            "versions": [version.version for version in versions],
            "valid_to": valid_to.isoformat() if valid_to else None,
            **({"regions": sorted(done)} if key.multi_region else {}),
        }

    with _kms_lease(key_id):
        return _operate(actor, key_id, Operation.REIMPORT, step)


def key_add_replica(*, actor: Actor, key_id: uuid.UUID, region: str) -> Done:
    """Replicate a multi-Region key to one more region and import its material there (SPEC §11).

    A replica left by an interrupted attempt (AWS answers AlreadyExistsException) is
    adopted, and the import tolerates material already there, so a retry converges.
    """

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        if not key.multi_region:
            raise Conflict(
                "This key is a single-Region KMS key, and AWS cannot make it multi-Region; renew it into a new "
                "multi-Region key instead.",
                state=key.state,
                reason="not_multi_region",
            )
        existing = [replica.region for replica in key.replicas.all()]
        (chosen,) = regions.validate_replica_regions(key.keystore, [region], field="region", existing=existing)
        # The replica would hold the key's alias in ``chosen``: refused before ReplicateKey if another key has it there.
        aliases.reserve(key.keystore, key.alias, [chosen], exclude=key.pk, state=key.state)
        arn = _replicate(kms, key.kms_key_id, chosen, portal_key_id=key.pk, name=key.name, tags=dict(key.tags))
        regional = kms.in_region(chosen)
        materials.import_missing_materials(regional, arn, key)
        if key.alias:
            _claim_alias(regional, key.keystore, key.alias, arn)
        regions.set_replica_rows(key, {chosen: arn}, KmsState.ENABLED)
        return {"region": chosen, "kms_key_arn": arn}

    return _operate(actor, key_id, Operation.ADD_REPLICA, step)


def key_recreate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    """A new KMS key holding this key's own material, for a key whose KMS key no longer exists in AWS.

    AWS accepts the same material in another KMS key but binds each ciphertext to the
    KMS key that made it: what was encrypted under the vanished key stays lost, while the
    material, its KCV, the alias, the tags and the key's history carry on. Refused while
    the old KMS key exists. A KMS key left by an interrupted attempt (found by the
    portal's tag) is adopted rather than duplicated, so retrying converges.
    """

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        if key.multi_region:
            raise Conflict(
                "A multi-Region key cannot be recreated: its replicas belong to the vanished primary. Renew it.",
                state=key.state,
                reason="multi_region",
            )
        aliases.reserve(key.keystore, key.alias, [key.keystore.region], exclude=key.pk, state=key.state)
        previous = key.kms_key_arn
        try:
            info = kms.describe(key.kms_key_id)
        except AwsError as exc:
            if exc.code != NOT_FOUND_CODE:
                raise
        else:
            raise Conflict(
                f"The KMS key {previous} still exists in AWS (state {info.aws_state}): there is nothing to recreate.",
                state=key.state,
                reason="kms_key_exists",
            )
        leftovers = [
            arn
            for arn in kms.find_keys_tagged(settings.BYOK_TAG_KEY, str(key.pk))
            if kms.describe(arn).state != KmsState.PENDING_DELETION
        ]
        key.kms_key_arn = (
            leftovers[0]
            if leftovers
            else kms.create_external_key(
                description=f"BYOK Portal key {key.name}",
                tags=_kms_tags(key.pk, dict(key.tags)),
                # The same spec and usage: the material and everything made with it fit only those.
                key_spec=key.key_spec,
                key_usage=key.key_usage,
            )
        )
        if key.state == KeyState.INACTIVE:
            if leftovers:  # the interrupted attempt may have imported already
                _disable_and_delete_material(key, kms, key.kms_key_arn)
            key.kms_state = KmsState.EMPTY
        else:
            _reimport_and_enable(key, kms)
        if key.alias:
            try:
                kms.create_alias(key.alias, key.kms_key_id)
            except AwsError as exc:
                # Ours already (an interrupted attempt), or someone else's: never taken over silently.
                if exc.code != "AlreadyExistsException" or key.alias not in kms.aliases_of(key.kms_key_id):
                    raise
        key.drift = []
        key.kms_checked_at = timezone.now()
        return {"previous_kms_key_arn": previous, "kms_key_arn": key.kms_key_arn, "adopted": bool(leftovers)}

    return _operate(actor, key_id, Operation.RECREATE, step)


def _stage_rotation(actor: Actor, key_id: uuid.UUID, material: custody.Material) -> None:
    """Commit the new material as a PENDING_ROTATION version *before* any KMS call of the rotation.

    From the moment AWS could make the material current, the portal must hold it: a
    rotation that fails half-way (or whose commit is lost) leaves this row, which the
    retry continues and reconciliation finishes or withdraws — never a material in AWS
    the portal lacks. Nothing is staged for a caller or key the rotation will refuse:
    :func:`_operate` then refuses and audits it. A version staged earlier is kept.
    """
    with transaction.atomic():
        try:
            key = _lock_key(key_id)
            _check_role(actor, key.keystore, Role.CUSTODIAN)
            # Nothing is staged for a rotation the approval gate would now hold back (StateChanged propagates).
            dual_control.confirm_state(Operation.ROTATE.value, key.pk, key.state)
            if not decide(Operation.ROTATE, key.state, key.key_spec):
                return
        except ServiceError:
            return
        if materials.staged_version(key) is not None or materials.rotations(key) >= materials.ROTATION_LIMIT:
            return
        latest = KeyMaterial.objects.filter(key=key).order_by("-version").values_list("version", flat=True).first()
        materials.seal_version(key, material, version=(latest or 0) + 1, state=MaterialState.PENDING_ROTATION).save()


def key_rotate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    """Rotate a symmetric key's material in place (SPEC §10): same KMS key, new current material version.

    Fresh material is staged (committed, :func:`_stage_rotation`), imported as
    ``NEW_KEY_MATERIAL``, ``RotateKeyOnDemand``, and confirmed with ``ListKeyRotations``
    and ``DescribeKey.CurrentKeyMaterialId``. Every step is safe to retry: a retry
    continues with the staged material (:func:`keys.materials.stage_material`). The
    26th rotation is refused with ``409 rotation_limit`` (renew instead).
    """
    material = custody.generate_material(DEFAULT_SPEC)  # before any lock: nothing waits for it

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        if materials.rotations(key) >= materials.ROTATION_LIMIT:
            raise materials.RotationLimitReached(key)
        staged = materials.staged_version(key)
        if staged is None:
            raise Conflict("No rotation could be staged for this key; try again.", state=key.state)
        rotated = materials.stage_material(kms, key.kms_key_arn, key, staged)
        staged.save()
        if key.multi_region and not rotated:
            # SPEC §10/§11: the same new material into every replica (EXISTING, with its id), then the rotation.
            regions.each_region(key, kms, lambda region: _stage_in_replica(key, region, staged))
        materials.rotate_to(
            kms,
            key.kms_key_arn,
            key,
            staged,
            already_current=rotated,
            wait_seconds=settings.BYOK_ROTATION_CONFIRM_SECONDS,
        )
        previous = materials.current_version(key)
        materials.finish_rotation(key, staged, timezone.now())
        key.kms_state = KmsState.ENABLED
        return {
            "version": staged.version,
            "previous_version": previous.version if previous else None,
            "kms_key_material_id": staged.kms_key_material_id,
            "kcv": staged.kcv,
            "rotations": materials.rotations(key),
        }

    try:
        with _kms_lease(key_id):
            _stage_rotation(actor, key_id, material)
            return _operate(actor, key_id, Operation.ROTATE, step)
    finally:
        custody.wipe(material)


def _stage_in_replica(key: Key, region: Region, staged: KeyMaterial) -> None:
    """A rotation's staged material into one replica (nothing for the primary, which has it already)."""
    if region.replica is None:
        return None
    listed = {m.key_material_id: m for m in region.kms.key_materials(region.kms_key_id)}
    there = listed.get(staged.kms_key_material_id)
    if there is not None and there.imported:
        return None  # a retry: this replica has it
    material = custody.unseal(key.pk, staged.material_sealed or b"", staged.version)
    valid_to = materials.expiry_for(key.material_valid_days)
    try:
        region.kms.import_material(
            region.kms_key_id,
            material,
            spec_of(key.key_spec).wrapping_algorithm,
            import_type=materials.EXISTING_KEY_MATERIAL,
            key_material_id=staged.kms_key_material_id,
            valid_to=valid_to,
        )
    finally:
        custody.wipe(material)
    materials.note_expiry(key, staged, valid_to)
    staged.save(update_fields=["valid_to"])
    return None


@contextmanager
def _kms_lease(key_id: uuid.UUID) -> Iterator[None]:
    """Hold the key's lease (:func:`_creation_lease`) while an operation spans transactions, if the id is a key's."""
    if not _is_uuid(key_id):
        yield
        return
    with _creation_lease(uuid.UUID(str(key_id))):
        yield


def resolve_staged_rotation(*, actor: Actor, key_id: uuid.UUID) -> str:
    """Finish or withdraw a rotation left half-done (reconciliation): returns ``finished``, ``withdrawn`` or ``""``.

    Left alone while the rotation's own process still holds the key's lease. If AWS
    already made the staged material current, the portal records the rotation
    (finished); otherwise the material leaves AWS and the staged version goes (withdrawn),
    so no material is ever pending in AWS without the portal's knowledge.
    """
    with lease_if_free(key_id) as free:
        if not free:
            return ""
        with transaction.atomic():
            key = _lock_key(key_id)
            staged = materials.staged_version(key)
            if staged is None:
                return ""
            kms = aws.kms_for(key.keystore)
            before = key.state
            done = materials.current_in_aws(kms, key.kms_key_arn, key, staged)
            outcome = "finished" if done is not None else "withdrawn"
            if done is not None:
                previous = materials.current_version(key)
                materials.finish_rotation(key, staged, done.rotation_date or timezone.now())
                key.save()
                details = {"version": staged.version, "previous_version": previous.version if previous else None}
            else:
                version = staged.version
                materials.withdraw_staged(kms, key.kms_key_arn, key, staged)
                details = {"version": version}
            record(
                actor=actor,
                operation=Operation.RECONCILE,
                outcome=Outcome.SUCCESS,
                key=key,
                reason=f"rotation_{outcome}",
                state_before=before,
                state_after=key.state,
                kms_request_ids=kms.request_ids,
                details={"interrupted": str(Operation.ROTATE), **details},
            )
    return outcome


def _pending_window(days: int | None) -> int:
    window = settings.BYOK_DELETION_WINDOW_DAYS if days is None else days
    if not isinstance(window, int) or isinstance(window, bool) or not MIN_WINDOW <= window <= MAX_WINDOW:
        raise ValidationError(
            {"pending_window_days": f"Must be a whole number of days from {MIN_WINDOW} to {MAX_WINDOW}."},
            code="invalid_window",
        )
    return window


def key_schedule_deletion(*, actor: Actor, key_id: uuid.UUID, pending_window_days: int | None = None) -> Done:
    window = _pending_window(pending_window_days)

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        dates: dict[str, dt.datetime | None] = {}

        def in_region(region: Region) -> KmsState:
            dates[region.name] = _schedule_in(region.kms, region.kms_key_id, window)
            if region.replica is not None:
                region.replica.deletion_date = dates[region.name]
            return KmsState.PENDING_DELETION

        # Replicas first: AWS deletes a multi-Region primary only after its last replica.
        regions.each_region(key, kms, in_region, replicas_first=True)
        deletion_date = dates[key.keystore.region]
        if deletion_date is None:
            # The primary waits in PendingReplicaDeletion; its window starts when the last replica is gone.
            replica_dates = [date for region, date in dates.items() if date and region != key.keystore.region]
            deletion_date = max(replica_dates, default=timezone.now()) + dt.timedelta(days=window)
        key.deletion_date = deletion_date
        details: dict[str, Any] = {"pending_window_days": window, "deletion_date": deletion_date.isoformat()}
        if key.multi_region:
            details["regions"] = {region: date.isoformat() if date else None for region, date in dates.items()}
        return details

    return _operate(actor, key_id, Operation.SCHEDULE_DELETION, step)


def _schedule_in(kms: KmsSession, kms_key_id: str, window: int) -> dt.datetime | None:
    """ScheduleKeyDeletion in one region; a retry finds AWS already counting down (or waiting for replicas)."""
    try:
        return kms.schedule_deletion(kms_key_id, window)
    except AwsError as exc:
        if exc.code != INVALID_STATE_CODE:
            raise
        info = kms.describe(kms_key_id)
        waiting_for_replicas = info.aws_state == "PendingReplicaDeletion"
        if info.state != KmsState.PENDING_DELETION or (info.deletion_date is None and not waiting_for_replicas):
            raise
        return info.deletion_date


def _cancel_in_region(key: Key, region: Region) -> KmsState:
    """CancelKeyDeletion in one region, then every material deleted there (the lifecycle says EMPTY)."""
    kms, kms_key_id = region.kms, region.kms_key_id
    try:
        kms.cancel_deletion(kms_key_id)
    except AwsError as exc:
        _tolerate_invalid_state(kms, kms_key_id, exc, {KmsState.DISABLED, KmsState.EMPTY})
    # CancelKeyDeletion leaves the key Disabled *with* its materials; the lifecycle says EMPTY.
    try:
        materials.delete_all_materials(kms, region.kms_key_arn, key)
    except AwsError as exc:
        _tolerate_invalid_state(kms, kms_key_id, exc, {KmsState.EMPTY})
    if region.replica is not None:
        region.replica.deletion_date = None
    return KmsState.EMPTY


def key_cancel_deletion(*, actor: Actor, key_id: uuid.UUID) -> Done:
    def step(key: Key, kms: KmsSession) -> None:
        regions.each_region(key, kms, lambda region: _cancel_in_region(key, region))
        _withdraw_pending_versions(key)
        materials.forget_expiries(key)
        key.deletion_date = None

    with _kms_intent(key_id, Operation.CANCEL_DELETION):
        return _operate(actor, key_id, Operation.CANCEL_DELETION, step)


def cleaned_up_fields() -> dict[str, Any]:
    """What cleanup sets on a key besides its state: the material and everything tied to it are gone.

    The one list of it, used by :func:`key_cleanup` and by the batched daily cleanup.
    A deleted key is never reconciled again, so its drift findings go too.
    """
    return {
        "kms_state": KmsState.UNKNOWN,
        "drift": [],
        "download_public_key": "",
        "download_prepared_by_iss": "",
        "download_prepared_by_sub": "",
        "download_prepared_at": None,
    }


def destroy_material_copies(key_ids: list[uuid.UUID]) -> None:
    """Cleanup's purpose: the portal's sealed copy of every material version of these keys is destroyed.

    The one place of it, used by :func:`key_cleanup` and by the batched daily cleanup; the
    version rows stay (without material) as the key's history.
    """
    KeyMaterial.objects.filter(key_id__in=key_ids).update(material_sealed=None)


def key_cleanup(*, actor: Actor, key_id: uuid.UUID, now: dt.datetime | None = None) -> Done:
    """Daily cleanup of one key: once its grace period is over, destroy the portal's copy of the material."""
    moment = now or timezone.now()

    def step(key: Key, kms: KmsSession | None) -> dict[str, Any]:
        if key.deletion_date is None or key.deletion_date > moment:
            raise Conflict(
                "The deletion waiting period of this key is not over yet.", state=key.state, reason="grace_not_over"
            )
        if key.multi_region:
            _refuse_while_any_region_remains(key)
        for field, value in cleaned_up_fields().items():
            setattr(key, field, value)
        destroy_material_copies([key.pk])
        return {"deletion_date": key.deletion_date.isoformat()}

    return _operate(actor, key_id, Operation.CLEANUP, step, needs_kms=False)


def _refuse_while_any_region_remains(key: Key) -> None:
    """A multi-Region key's material goes only once every region's KMS key is gone (SPEC §11).

    AWS deletes the primary only after its last replica, so its own date may lie beyond the
    portal's estimate; whatever still exists keeps the portal's copy alive.
    """
    kms = aws.kms_for(key.keystore)
    remaining = []
    for region in regions.regions_of(key, kms):
        try:
            region.kms.describe(region.kms_key_id)
        except AwsError as exc:
            if exc.code != NOT_FOUND_CODE:
                raise
            continue
        remaining.append(region.name)
    if remaining:
        raise Conflict(
            f"The KMS key still exists in {', '.join(remaining)}: the material is kept until every region's is gone.",
            state=key.state,
            reason="regions_remaining",
            regions=remaining,
        )


# --- update -----------------------------------------------------------------------


class _Unset(Enum):
    """Marks a field ``key_update`` leaves as it is (None is a value: "no expiry")."""

    UNSET = auto()


_UNSET = _Unset.UNSET


def key_update(
    *,
    actor: Actor,
    key_id: uuid.UUID,
    name: str | _Unset = _UNSET,
    expires: dt.date | _Unset | None = _UNSET,
    tags: dict[str, str] | _Unset = _UNSET,
    alias: str | _Unset = _UNSET,
    rotation_period_days: int | _Unset | None = _UNSET,
    rotation_on_limit: str | _Unset = _UNSET,
    material_valid_days: int | _Unset | None = _UNSET,
) -> Done:
    """Change name, expiry, tags, alias, rotation policy and material expiry; tags and alias are applied to the KMS
    key. A new ``material_valid_days`` reaches KMS at the material's next import: the re-import task's next run
    (:func:`keys.lifecycle.reimport_due`), or a rotation, activation or upload before it.

    Input is checked inside the operation, after the caller's role: an outsider
    learns nothing from how a bad body is answered. AWS's alias and tag rules are
    all checked before the first AWS call.
    """

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
        nonlocal alias, tags
        if name is not _UNSET and not (name or "").strip():
            raise ValidationError({"name": "A key needs a name."})
        if alias is not _UNSET:
            alias = alias or ""
            validate_alias(alias)
            if alias != key.alias:
                # Free in every region the key holds its alias in (a multi-Region key's replicas' too).
                regions_held = [region.name for region in regions.regions_of(key, kms)]
                aliases.reserve(key.keystore, alias, regions_held, exclude=key.pk, state=key.state)
        if tags is not _UNSET:
            tags = validate_tags(tags)
        if rotation_period_days is not _UNSET:
            validate_rotation_period(rotation_period_days)
        if rotation_on_limit is not _UNSET and rotation_on_limit not in RotationOnLimit.values:
            raise ValidationError({"rotation_on_limit": f"Must be one of {', '.join(RotationOnLimit.values)}."})
        if material_valid_days is not _UNSET:
            validate_material_valid_days(material_valid_days)
        changed: dict[str, Any] = {}
        if name is not _UNSET and name != key.name:
            changed["name"] = {"from": key.name, "to": name}
            key.name = name
        if expires is not _UNSET and expires != key.expires:
            changed["expires"] = {"from": _iso(key.expires), "to": _iso(expires)}
            key.expires = expires
            key.expiry_warned_on = None
        if rotation_period_days is not _UNSET and rotation_period_days != key.rotation_period_days:
            changed["rotation_period_days"] = {"from": key.rotation_period_days, "to": rotation_period_days}
            key.rotation_period_days = rotation_period_days
            key.next_rotation_date = rotation_policy.next_rotation_date(key)
        if rotation_on_limit is not _UNSET and rotation_on_limit != key.rotation_on_limit:
            changed["rotation_on_limit"] = {"from": key.rotation_on_limit, "to": rotation_on_limit}
            key.rotation_on_limit = rotation_on_limit
        if material_valid_days is not _UNSET and material_valid_days != key.material_valid_days:
            # Audited as "valid_days": the trail redacts every entry whose name says "material".
            changed["valid_days"] = {"from": key.material_valid_days, "to": material_valid_days}
            key.material_valid_days = material_valid_days
        new_tags = tags if tags is not _UNSET and tags != key.tags else None
        new_alias = alias if alias is not _UNSET and alias != key.alias else None

        def in_region(region: Region) -> None:
            # Tags and aliases are regional (SPEC §11): each region's KMS key gets them.
            if new_tags is not None:
                region.kms.remove_tags(region.kms_key_id, sorted(set(key.tags) - set(new_tags)))
                region.kms.set_tags(region.kms_key_id, new_tags)
            if new_alias is not None:
                if new_alias:
                    # CreateAlias first: an alias that exists in AWS is never moved over blindly.
                    _claim_alias(region.kms, key.keystore, new_alias, region.kms_key_arn)
                if key.alias:
                    region.kms.delete_alias(key.alias)

        if new_tags is not None or new_alias is not None:
            regions.each_region(key, kms, in_region)
        if new_tags is not None:
            changed["tags"] = {"removed": sorted(set(key.tags) - set(new_tags)), "set": sorted(new_tags)}
            key.tags = new_tags
        if new_alias is not None:
            changed["alias"] = {"from": key.alias, "to": new_alias}
            key.alias = new_alias
        return {"changed": changed}

    return _operate(actor, key_id, Operation.UPDATE, step)


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


# --- create and renew -------------------------------------------------------------


def _kms_tags(key_id: uuid.UUID, tags: dict[str, str]) -> dict[str, str]:
    return {**tags, settings.BYOK_TAG_KEY: str(key_id)}


@dataclass
class _Creation:
    """What a create/renew attempt has done in KMS so far, for undoing it if the attempt fails."""

    journal: PendingCreation
    create_attempted: bool = False
    alias_created: str = ""
    # A multi-Region key: the replicas made so far (region → ARN), and the regions the alias was created in.
    replica_arns: dict[str, str] = dataclasses.field(default_factory=dict)
    alias_regions: list[str] = dataclasses.field(default_factory=list)

    @property
    def arn(self) -> str:
        return self.journal.kms_key_arn


@contextmanager
def _creation_journal(keystore: Keystore, key_id: uuid.UUID, operation: Operation, actor: Actor) -> Iterator[_Creation]:
    """Record the intent to create a KMS key before CreateKey, and forget it once the Key row commits.

    Must be entered outside any transaction, so the journal row is committed first.
    If the work in between fails, the new KMS key (and an alias created for it) is
    removed at once; if even that fails, or the process dies, the journal row stays
    for :func:`recover_pending_creations`.
    """
    # The lease is taken before the journal row exists, so reconciliation never sees the row unleased while it runs.
    with _creation_lease(key_id):
        creation = _Creation(PendingCreation.objects.create(key_id=key_id, keystore=keystore, operation=operation))
        try:
            yield creation
        except BaseException:
            if not creation.create_attempted:
                creation.journal.delete()
            else:
                _undo_creation(keystore, creation, actor)
            raise
        creation.journal.delete()


def creation_lock_id(key_id: Any) -> int:
    """The PostgreSQL advisory lock that is a creation's lease on its journal row (64 bits of the key id)."""
    return int.from_bytes(uuid.UUID(str(key_id)).bytes[:8], "big", signed=True)


def creation_lease_seconds() -> int:
    """Worst-case duration of one create or renew: every KMS call of it, each with all of botocore's attempts.

    Only where the database has no session locks (SQLite, for development) is a
    leftover journal row judged by its age; this is that age.
    """
    per_call = settings.BYOK_AWS_CONNECT_TIMEOUT + settings.BYOK_AWS_READ_TIMEOUT
    # AssumeRole, CreateKey, GetParametersForImport, ImportKeyMaterial, an alias call, and the undo's two.
    return int(per_call * settings.BYOK_AWS_MAX_ATTEMPTS * 7)


@contextmanager
def _creation_lease(key_id: uuid.UUID) -> Iterator[None]:
    """Hold the creation's lease for exactly as long as the creating process works on it.

    A session-level advisory lock: PostgreSQL releases it when the process ends or
    loses its connection, so a crashed creation is recoverable at once, while a slow
    one (AWS retrying) is never taken for dead. Session locks outlive a rolled-back
    transaction, which is why the creation enters this outside any transaction.
    """
    if connection.vendor != "postgresql":
        yield
        return
    lock = creation_lock_id(key_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lock])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [lock])
        except DatabaseError:
            logger.warning("could not release a creation lease", extra={"key_id": str(key_id)})


@contextmanager
def _kms_intent(key_id: uuid.UUID, operation: Operation) -> Iterator[None]:
    """Journal an operation on an existing key whose KMS changes must not outlive a lost database commit.

    Cancel deletion brings a KMS key back from pending deletion. If the database
    goes away between its KMS calls and its commit, KMS has changed and the portal
    (and its audit trail) have not, and drift alone cannot tell that from a deletion
    cancelled by hand in AWS. The journal row (committed first, held under the key's
    lease) says the portal did it: reconciliation finishes the operation
    (:func:`_finish_interrupted`). It is dropped whenever the database saw the
    outcome — success, or a refusal or AWS failure audited as such.
    """
    if not _is_uuid(key_id):
        yield  # no such key: the operation answers 404 without touching KMS
        return
    key_uuid = uuid.UUID(str(key_id))
    key = Key.objects.filter(pk=key_uuid).only("id", "keystore_id", "kms_key_arn").first()
    if key is None:
        yield
        return
    with _creation_lease(key_uuid):
        PendingCreation.objects.update_or_create(
            key_id=key_uuid,
            defaults={"keystore_id": key.keystore_id, "operation": operation, "kms_key_arn": key.kms_key_arn},
        )
        try:
            yield
        except DatabaseError:
            raise  # the outcome never reached the database: the row stays for reconciliation
        except BaseException:
            PendingCreation.objects.filter(pk=key_uuid).delete()
            raise
        PendingCreation.objects.filter(pk=key_uuid).delete()


# Operations on existing keys that reconciliation finishes when their journal row outlived its process.
_FINISHERS: dict[str, Callable[..., Done]] = {Operation.CANCEL_DELETION: key_cancel_deletion}


def _finish_interrupted(actor: Actor, journal: PendingCreation) -> int:
    """Run an interrupted operation again, as the system: each of its KMS steps converges (module docstring)."""
    operation = Operation(journal.operation)
    key = Key.objects.filter(pk=journal.key_id).first()
    if key is None or not _would_change(operation, key.state):
        journal.delete()
        return 1  # it committed after all (or the key moved on): nothing to finish
    # The operation's own journal takes this row over, and drops it once the database has the outcome.
    _FINISHERS[operation](actor=actor, key_id=key.pk)
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.RECONCILE,
            outcome=Outcome.SUCCESS,
            key=Key.objects.get(pk=key.pk),
            reason="interrupted_operation_finished",
            state_before=key.state,
            state_after=Key.objects.values_list("state", flat=True).get(pk=key.pk),
            details={"interrupted": str(operation), "started_at": journal.started_at.isoformat()},
        )
    return 1


def _would_change(operation: Operation, state: str) -> bool:
    """Whether ``operation`` would change a key in ``state`` (no refusal raised)."""
    try:
        return decide(operation, state)
    except InvalidState:
        return False


@contextmanager
def _abandoned(journal: PendingCreation, older_than: dt.timedelta | None) -> Iterator[bool]:
    """Whether the creation behind ``journal`` is over (its process gone), holding its lease while the caller acts."""
    if connection.vendor != "postgresql":
        age = older_than if older_than is not None else dt.timedelta(seconds=creation_lease_seconds())
        yield journal.started_at < timezone.now() - age
        return
    with lease_if_free(journal.key_id) as free:
        yield free


@contextmanager
def lease_if_free(key_id: uuid.UUID) -> Iterator[bool]:
    """Take the key's lease if nobody holds it (True), for as long as the caller acts; False if it is held.

    Without PostgreSQL (development) there are no leases: always free.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    lock = creation_lock_id(key_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock])
        taken = bool(cursor.fetchone()[0])
    if not taken:
        yield False  # its owner is alive and working: not ours to touch
        return
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock])


def _undo_creation(keystore: Keystore, creation: _Creation, actor: Actor) -> None:
    """Best effort: schedule the half-created KMS key for deletion so no orphan is left behind."""
    try:
        kms = aws.kms_for(keystore, operation=creation.journal.operation, acting=actor)
        if creation.alias_created:
            for region in creation.alias_regions or [keystore.region]:
                kms.in_region(region).delete_alias(creation.alias_created)
        # The CreateKey response may have been lost (a timeout after AWS acted): find the key by its tag.
        arns = (
            [creation.arn]
            if creation.arn
            else list(kms.find_keys_tagged(settings.BYOK_TAG_KEY, str(creation.journal.key_id)))
        )
        for arn in arns:
            _schedule_orphan_deletion(kms, arn)
    except AwsError:
        logger.warning("could not remove a half-created KMS key", extra={"key_id": str(creation.journal.key_id)})
        return  # the journal row stays; reconciliation retries
    creation.journal.delete()


def _schedule_orphan_deletion(kms: KmsSession, arn: str) -> None:
    """Schedule a KMS key no row owns for deletion; a multi-Region primary's replicas first, so none is orphaned."""
    key_id = arn.rsplit("/", 1)[-1]
    if key_id.startswith("mrk-"):
        try:
            replicas = kms.describe(key_id).replicas
        except AwsError as exc:
            if exc.code != NOT_FOUND_CODE:
                raise
            replicas = {}
        for region in replicas:
            _schedule_one_orphan(kms.in_region(region), key_id)
    _schedule_one_orphan(kms, key_id)


def _schedule_one_orphan(kms: KmsSession, key_id: str) -> None:
    try:
        kms.schedule_deletion(key_id, MIN_WINDOW)
    except AwsError as exc:
        if exc.code not in (INVALID_STATE_CODE, "NotFoundException"):  # already pending deletion, or gone
            raise


def schedule_orphan_deletion(kms: KmsSession, arn: str) -> None:
    """Schedule a KMS key no portal row owns for deletion (shortest window: it never held anyone's data)."""
    _schedule_orphan_deletion(kms, arn)


def is_portal_key_id(value: str) -> bool:
    """Whether a tag value can be one of the portal's key ids (the portal's tag always carries a UUID)."""
    return bool(value) and _is_uuid(value)


def _stranded_portal_alias(kms: KmsSession, keystore: Keystore, alias: str, target_arn: str) -> bool:
    """True if ``alias`` points at a KMS key the portal made (by its tag) that no live portal key has,
    and no live portal key holds the alias in this region.

    Such an alias was left behind by a creation that failed after CreateAlias acted
    (its answer lost, the key then scheduled for deletion): it is the portal's to reuse.
    An alias on a live key's KMS key (another keystore's, or a replica) is never stranded.
    """
    if aliases.holder(keystore.aws_account_id, kms.region or keystore.region, alias) is not None:
        return False
    if aliases.kms_key_in_use(target_arn):
        return False
    tags = kms.tags_of(target_arn.rsplit("/", 1)[-1])
    return is_portal_key_id(tags.get(settings.BYOK_TAG_KEY, ""))


def _claim_alias(kms: KmsSession, keystore: Keystore, alias: str, arn: str) -> None:
    """CreateAlias for a new key; an existing alias is taken over only when it is the portal's own.

    It is the portal's when it already points at this very key (a CreateAlias that AWS
    executed but whose answer was lost, retried by botocore: AlreadyExistsException) or
    at a key the portal made that no live portal key uses it for (stranded by an earlier
    failed creation): reused, or repointed with UpdateAlias. Anyone else's alias is never
    taken: the AlreadyExistsException stands.
    """
    key_id = arn.rsplit("/", 1)[-1]
    try:
        kms.create_alias(alias, key_id)
        return
    except AwsError as exc:
        if exc.code != "AlreadyExistsException":
            raise
        try:
            target = kms.describe(alias).arn  # DescribeKey accepts an alias name
            ours = target == arn or _stranded_portal_alias(kms, keystore, alias, target)
        except AwsError:
            # E.g. AccessDenied: the least-privilege role may not look at other keys, so
            # the alias is not the portal's. AlreadyExists must stand: the caller then
            # leaves the alias alone, where any other error would have it removed.
            raise exc from None
        if not ours:
            raise
        if target == arn:
            return
    kms.point_alias(alias, key_id)


def release_stranded_aliases(kms: KmsSession, keystore: Keystore, names: list[str]) -> tuple[list[str], list[str]]:
    """Aliases pointing at an orphaned portal KMS key: back to the live portal key named by them, else deleted.

    Returns ``(repointed, deleted)``. An alias whose live owner cannot take it (its
    KMS key is pending deletion, which UpdateAlias refuses) is left for a later run.
    """
    repointed: list[str] = []
    deleted: list[str] = []
    for alias in names:
        owner = aliases.holder(keystore.aws_account_id, kms.region or keystore.region, alias)
        if owner is None or not owner.kms_key_arn:
            kms.delete_alias(alias)
            deleted.append(alias)
            continue
        try:
            kms.point_alias(alias, owner.kms_key_id)
        except AwsError as exc:
            if exc.code != INVALID_STATE_CODE:
                raise
            continue
        repointed.append(alias)
    return repointed, deleted


# Asks for a keystore's KMS scan soon (a Celery task). The task module imports this one, so
# it is handed in from ``KeysConfig.ready`` rather than imported here (no import cycle).
_scan_keystore_soon: Callable[[uuid.UUID], None] | None = None


def scan_keystores_with(enqueue: Callable[[uuid.UUID], None]) -> None:
    """Set how a keystore's KMS scan is asked for after a retried CreateKey (``keys.tasks.scan_keystore_soon``)."""
    global _scan_keystore_soon  # set once, at start-up
    _scan_keystore_soon = enqueue


def _sweep_if_create_retried(kms: KmsSession, keystore: Keystore) -> dict[str, Any] | None:
    """After a CreateKey that botocore had to retry, look for the duplicate at once (on commit), not in an hour.

    A retried CreateKey may have created a key on an attempt whose answer was lost:
    the same portal tag on a second KMS key that no row will own. The keystore's KMS
    scan (``keys.tasks.sweep_keystore``) schedules it for deletion. Returns the
    audit details that say so, or None.
    """
    if "CreateKey" not in kms.retried:
        return None
    enqueue = _scan_keystore_soon
    if enqueue is not None:  # set by KeysConfig.ready; the periodic reconciliation scans in any case
        transaction.on_commit(lambda: enqueue(keystore.pk))
    return {"create_retried": True}


def _provision_kms_key(
    kms: KmsSession,
    creation: _Creation,
    *,
    name: str,
    tags: dict[str, str],
    material: custody.Material,
    key_spec: str,
    key_usage: str,
    multi_region: bool = False,
    replica_regions: list[str] | None = None,
    valid_to: dt.datetime | None = None,
) -> tuple[str, str]:
    """CreateKey + the first material; for a multi-Region key, each replica made and given the same material.

    ``valid_to``: the material's expiry in every region (None: it does not expire).

    Returns the new key's ARN and its first KeyMaterialId (empty unless symmetric). The
    replicas are recorded in ``creation`` as they come (SPEC §11), so a failure in any
    region schedules every one of them for deletion (replicas first) with the primary.
    """
    journal = creation.journal
    creation.create_attempted = True
    arn = kms.create_external_key(
        description=f"BYOK Portal key {name}",
        tags=_kms_tags(journal.key_id, tags),
        key_spec=key_spec,
        key_usage=key_usage,
        multi_region=multi_region,
    )
    # Remember the ARN at once: it is how an orphan is found after a crash. (Inside a
    # renew this rolls back with the transaction; the tag still finds the key.)
    PendingCreation.objects.filter(pk=journal.pk).update(kms_key_arn=arn)
    journal.kms_key_arn = arn
    kms_key_id = arn.rsplit("/", 1)[-1]
    material_id = materials.first_import(kms, arn, journal.key_id, key_spec, material, valid_to=valid_to)
    for region in replica_regions or []:
        creation.replica_arns[region] = _replicate(
            kms, kms_key_id, region, portal_key_id=journal.key_id, name=name, tags=tags
        )
        # The same material, with the KeyMaterialId AWS gave it in the primary (symmetric keys).
        spec = spec_of(key_spec)
        kms.in_region(region).import_material(
            kms_key_id,
            material,
            spec.wrapping_algorithm,
            valid_to=valid_to,
            **(
                {"import_type": materials.EXISTING_KEY_MATERIAL, "key_material_id": material_id}
                if spec.versioned
                else {}
            ),
        )
    return arn, material_id


def _replicate(
    kms: KmsSession, kms_key_id: str, region: str, *, portal_key_id: uuid.UUID, name: str, tags: dict[str, str]
) -> str:
    """ReplicateKey into ``region`` (tagged like the primary, so it is always found again), once it is usable."""
    arn = kms.replicate(kms_key_id, region, description=f"BYOK Portal key {name}", tags=_kms_tags(portal_key_id, tags))
    info = kms.in_region(region).wait_created(kms_key_id)
    if info.aws_state == aws.CREATING:
        raise AwsError(
            kind="kms_error",
            operation="ReplicateKey",
            code="ReplicaNotReady",
            message=f"The replica in {region} is still being created; try again in a moment.",
            region=region,
        )
    return arn


def _claim_alias_everywhere(kms: KmsSession, creation: _Creation, keystore: Keystore, alias: str, arn: str) -> None:
    """The new key's alias in its own region and in every replica's (aliases are regional)."""
    for region, regional_arn in [(keystore.region, arn), *creation.replica_arns.items()]:
        try:
            _claim_alias(kms.in_region(region), keystore, alias, regional_arn)
        except AwsError as exc:
            if exc.code != "AlreadyExistsException":  # someone else's alias: never remove it
                creation.alias_created = alias
                creation.alias_regions.append(region)
            raise
        creation.alias_created = alias
        creation.alias_regions.append(region)


def _check_fields(key_spec: str, material: custody.Material) -> dict[str, Any]:
    """A new key row's check values (SPEC §9); the material itself goes into its version 1."""
    checks = custody.check_values(key_spec, material)
    return {"kcv": checks.kcv, "public_key": checks.public_key, "public_key_sha256": checks.public_key_sha256}


def validate_rotation_period(days: int | None) -> None:
    """A rotation period is a whole number of days in AWS's range (90–2560), or None for no policy."""
    if days is None:
        return
    if (
        not isinstance(days, int)
        or isinstance(days, bool)
        or not (MIN_ROTATION_PERIOD_DAYS <= days <= MAX_ROTATION_PERIOD_DAYS)
    ):
        raise ValidationError(
            {
                "rotation_period_days": f"Must be a whole number of days from {MIN_ROTATION_PERIOD_DAYS} to "
                f"{MAX_ROTATION_PERIOD_DAYS} (AWS's range), or empty for no rotation policy."
            },
            code="invalid_rotation_period",
        )


def validate_material_valid_days(days: int | None) -> None:
    """How long material stays in KMS before AWS deletes it: 1–365 days (AWS's ValidTo is at most 365 days
    ahead), or None for material that does not expire."""
    if days is None:
        return
    if (
        not isinstance(days, int)
        or isinstance(days, bool)
        or not (MIN_MATERIAL_VALID_DAYS <= days <= MAX_MATERIAL_VALID_DAYS)
    ):
        raise ValidationError(
            {
                "material_valid_days": f"Must be a whole number of days from {MIN_MATERIAL_VALID_DAYS} to "
                f"{MAX_MATERIAL_VALID_DAYS} (AWS accepts a ValidTo at most 365 days ahead), or empty for material "
                "that does not expire."
            },
            code="invalid_material_valid_days",
        )


def _set_next_rotation(key: Key) -> None:
    key.next_rotation_date = rotation_policy.next_rotation_date(key)
    Key.objects.filter(pk=key.pk).update(next_rotation_date=key.next_rotation_date)


def _add_first_version(
    key: Key, material: custody.Material, kms_key_material_id: str, valid_to: dt.datetime | None
) -> None:
    """Version 1 of a new key's material: sealed, current, and just imported (to expire at ``valid_to``)."""
    version = materials.seal_version(key, material, version=1, state=MaterialState.CURRENT)
    version.kms_key_material_id = kms_key_material_id
    version.imported_at = key.created_at
    version.valid_to = valid_to
    version.save()


def key_create(
    *,
    actor: Actor,
    keystore_id: uuid.UUID,
    name: str,
    alias: str = "",
    tags: dict[str, str] | None = None,
    expires: dt.date | None = None,
    key_spec: str = DEFAULT_SPEC,
    key_usage: str | None = None,
    multi_region: bool = False,
    replica_regions: list[str] | None = None,
    rotation_period_days: int | _Unset | None = _UNSET,
    material_valid_days: int | _Unset | None = _UNSET,
) -> Done:
    """Create a KMS key (EXTERNAL) of ``key_spec``/``key_usage``, generate material, import it, set alias and tags.

    The rotation policy is ``rotation_period_days`` if given (None: none), else the keystore's default;
    likewise ``material_valid_days`` (the material's expiry in KMS, re-imported before it).

    ``multi_region``: a multi-Region key (SPEC §11) with a replica, holding the same material, in
    each of ``replica_regions`` (other regions of the keystore's partition).

    The material is generated before anything is locked or created: an RSA-4096 key
    takes a second or more to generate, and nothing else should wait for it.
    """
    keystore = Keystore.objects.filter(pk=keystore_id).first() if _is_uuid(keystore_id) else None
    if keystore is None:
        raise NotFound("Keystore not found.")
    try:
        _check_role(actor, keystore, Role.CUSTODIAN)
    except (NotFound, PermissionRefused) as exc:
        record_refusal(actor=actor, operation=Operation.CREATE, exc=exc, keystore=keystore)
        raise
    if keystore.state != KeystoreState.ACTIVE:
        raise Conflict("The keystore is deleted.", state=keystore.state)
    if not (name or "").strip():
        raise ValidationError({"name": "A key needs a name."})
    key_spec, key_usage = validate_spec_and_usage(key_spec, key_usage)
    period = keystore.rotation_period_days if rotation_period_days is _UNSET else rotation_period_days
    validate_rotation_period(period)
    valid_days = keystore.material_valid_days if material_valid_days is _UNSET else material_valid_days
    validate_material_valid_days(valid_days)
    validate_alias(alias)
    clean_tags = validate_tags(tags or {})
    if replica_regions and not multi_region:
        raise ValidationError({"replica_regions": "Replicas need a multi-Region key: set multi_region."})
    replicas = regions.validate_replica_regions(keystore, replica_regions or [], field="replica_regions")
    # The alias must be free in every region the key will hold it in; checked again under its lock below.
    alias_regions = [keystore.region, *replicas]
    aliases.refuse_if_taken(keystore, alias, alias_regions)

    key_id = uuid.uuid4()
    material = custody.generate_material(key_spec)
    kms = aws.kms_for(keystore, operation=Operation.CREATE, acting=actor)
    valid_to = materials.expiry_for(valid_days)
    try:
        with (
            aliases.reserved(keystore, alias, alias_regions),
            _creation_journal(keystore, key_id, Operation.CREATE, actor) as creation,
        ):
            arn, material_id = _provision_kms_key(
                kms,
                creation,
                name=name,
                tags=clean_tags,
                material=material,
                key_spec=key_spec,
                key_usage=key_usage,
                multi_region=multi_region,
                replica_regions=replicas,
                valid_to=valid_to,
            )
            if alias:
                _claim_alias_everywhere(kms, creation, keystore, alias, arn)
            with transaction.atomic():
                key = Key.objects.create(
                    id=key_id,
                    keystore=keystore,
                    name=name,
                    alias=alias,
                    tags=clean_tags,
                    expires=expires,
                    state=KeyState.ACTIVE,
                    kms_key_arn=arn,
                    kms_state=KmsState.ENABLED,
                    kms_checked_at=timezone.now(),
                    key_spec=key_spec,
                    key_usage=key_usage,
                    multi_region=multi_region,
                    **_check_fields(key_spec, material),
                    rotation_period_days=period,
                    rotation_on_limit=keystore.rotation_on_limit,
                    material_valid_days=valid_days,
                    created_by=actor.user,
                    updated_by=actor.user,
                )
                _add_first_version(key, material, material_id, valid_to)
                regions.set_replica_rows(key, creation.replica_arns, KmsState.ENABLED)
                _set_next_rotation(key)
                record(
                    actor=actor,
                    operation=Operation.CREATE,
                    outcome=Outcome.SUCCESS,
                    key=key,
                    state_after=key.state,
                    kms_request_ids=kms.request_ids,
                    details={
                        "key_spec": key_spec,
                        "key_usage": key_usage,
                        **({"replica_regions": replicas} if multi_region else {}),
                        **(_sweep_if_create_retried(kms, keystore) or {}),
                    },
                )
    except AwsError as exc:
        with transaction.atomic():
            record(
                actor=actor,
                operation=Operation.CREATE,
                outcome=Outcome.FAILED,
                keystore=keystore,
                reason=exc.code,
                kms_request_ids=kms.request_ids,
                error=f"{exc.operation}: {exc.code}: {exc.message}",
                details={
                    "name": name,
                    "alias": alias,
                    "key_spec": key_spec,
                    "key_usage": key_usage,
                    **({"replica_regions": replicas, "failed_region": exc.region} if multi_region else {}),
                },
            )
        raise
    finally:
        custody.wipe(material)
    return Done(key, Outcome.SUCCESS)


def _point_alias_back(kms: KmsSession, alias: str, old: Key, region: str = "") -> None:
    """Undo a half-done alias move (the UpdateAlias may have happened even if its response was lost)."""
    replica = old.replicas.filter(region=region).first() if region and region != old.keystore.region else None
    try:
        kms.point_alias(alias, replica.kms_key_id if replica else old.kms_key_id)
    except AwsError:
        logger.warning("could not move an alias back after a failed renew", extra={"key_id": str(old.pk)})


def _give_alias_back(old: Key, alias: str, actor: Actor) -> None:
    try:
        kms = aws.kms_for(old.keystore, operation=Operation.RENEW, acting=actor)
    except AwsError:
        logger.warning("could not move an alias back after a failed renew", extra={"key_id": str(old.pk)})
        return  # reconciliation's KMS scan moves it back to the key that owns it
    _point_alias_back(kms, alias, old)


def _refuse_second_renewal(old: Key) -> None:
    """The renewal chain is a line: each key has at most one successor (``replaced_by``).

    A REPLACED key can come back to ACTIVE (schedule deletion, cancel, activate); renewing
    it again would fork the chain into two successors, and which of them is "the" new key
    would be anyone's guess. The successor it already has is where the chain continues, so
    a second renewal is refused (409, audited) and names the key to renew instead.
    """
    successor = Key.objects.filter(replaces_id=old.pk).values_list("pk", flat=True).first()
    if successor is not None:
        raise Conflict(
            f"This key was already renewed by key {successor}; renew that key (the newest of the chain) instead.",
            state=old.state,
            reason="already_renewed",
            replaced_by=str(successor),
        )


_VERSIONED = re.compile(r"^(?P<base>.*\S) v(?P<number>\d+)$")
MAX_NAME = 200  # Key.name's length


@dataclass(frozen=True)
class RenewalDefaults:
    """The new key's name and expiry when a renewal does not say them."""

    name: str
    expires: dt.date | None


def renewal_defaults(key: Key, today: dt.date) -> RenewalDefaults:
    """What a renewal of ``key`` names the new key and when it expires, unless told otherwise.

    The name gets a version suffix, so the list never shows two keys of the same name:
    "orders" -> "orders v2", "orders v2" -> "orders v3" (the base is shortened if the
    suffix would pass the name's length). The expiry keeps the old key's cryptoperiod:
    as many days from ``today`` as the old key had from its creation to its expiry (at
    least one); a key without an expiry gives one without. Pure: the API's default and
    the page's prefilled form are this same function.
    """
    found = _VERSIONED.match(key.name)
    base, number = (found["base"], int(found["number"]) + 1) if found else (key.name, 2)
    suffix = f" v{number}"
    name = base[: MAX_NAME - len(suffix)].rstrip() + suffix
    if key.expires is None:
        return RenewalDefaults(name, None)
    created = timezone.localdate(key.created_at) if key.created_at else today
    period = max(key.expires - created, dt.timedelta(days=1))
    return RenewalDefaults(name, today + period)


def key_renew(
    *,
    actor: Actor,
    key_id: uuid.UUID,
    name: str | _Unset = _UNSET,
    expires: dt.date | _Unset | None = _UNSET,
) -> Done:
    """New key and KMS key with fresh material; the alias moves; the old key becomes REPLACED (still enabled).

    The new key's ``name`` and ``expires`` (None: no expiry) are the caller's, or else
    :func:`renewal_defaults`; they are checked after the caller's role, before any KMS call.
    """
    current = Key.objects.select_related("keystore").filter(pk=key_id).first() if _is_uuid(key_id) else None
    if current is None:
        raise NotFound("Key not found.")
    new_id = uuid.uuid4()
    # Generated before the row lock is taken (an RSA-4096 key takes a second or more). The spec
    # is fixed at creation, so what was read here is what the locked row says.
    material = custody.generate_material(current.key_spec)
    renewed: Key | None = None
    moved: list[str] = []  # the alias, once UpdateAlias has answered

    def step(old: Key, kms: KmsSession) -> dict[str, Any]:
        nonlocal renewed
        _refuse_second_renewal(old)
        defaults = renewal_defaults(old, timezone.localdate())
        new_name = defaults.name if name is _UNSET else name
        new_expires = defaults.expires if expires is _UNSET else expires
        if not (new_name or "").strip():
            raise ValidationError({"name": "A key needs a name."})
        # A multi-Region key is renewed as one, with replicas in the same regions.
        replica_regions = [replica.region for replica in old.replicas.all()] if old.multi_region else []
        alias_regions = [old.keystore.region, *replica_regions]
        # The alias moves with UpdateAlias in each region: only where no other key holds it.
        aliases.reserve(old.keystore, old.alias, alias_regions, exclude=old.pk, state=old.state)
        valid_to = materials.expiry_for(old.material_valid_days)
        arn, material_id = _provision_kms_key(
            kms,
            creation,
            name=new_name,
            tags=dict(old.tags),
            material=material,
            key_spec=old.key_spec,
            key_usage=old.key_usage,
            multi_region=old.multi_region,
            replica_regions=replica_regions,
            valid_to=valid_to,
        )
        alias = old.alias
        try:
            if alias:
                # Both keys have the same spec and usage, as UpdateAlias requires. Aliases are regional.
                for region in alias_regions:
                    kms.in_region(region).point_alias(alias, arn.rsplit("/", 1)[-1])
                moved.append(alias)
            old.alias = ""
            # The old row gives up the alias first: a live alias is unique per keystore.
            Key.objects.filter(pk=old.pk).update(alias="")
            renewed = Key.objects.create(
                id=new_id,
                keystore=old.keystore,
                name=new_name,
                alias=alias,
                tags=dict(old.tags),
                expires=new_expires,
                state=KeyState.ACTIVE,
                kms_key_arn=arn,
                kms_state=KmsState.ENABLED,
                kms_checked_at=timezone.now(),
                key_spec=old.key_spec,
                key_usage=old.key_usage,
                multi_region=old.multi_region,
                **_check_fields(old.key_spec, material),
                # The renewed key keeps the old one's rotation policy.
                rotation_period_days=old.rotation_period_days,
                rotation_on_limit=old.rotation_on_limit,
                material_valid_days=old.material_valid_days,
                replaces=old,
                created_by=actor.user,
                updated_by=actor.user,
            )
            _add_first_version(renewed, material, material_id, valid_to)
            regions.set_replica_rows(renewed, creation.replica_arns, KmsState.ENABLED)
            _set_next_rotation(renewed)
        except BaseException:
            # The alias may have moved even if UpdateAlias's response was lost: move it back.
            if alias:
                for region in alias_regions:
                    _point_alias_back(kms.in_region(region), alias, old, region)
            moved.clear()
            raise
        return {
            "renewed_by": str(new_id),
            "name": new_name,
            "expires": _iso(new_expires),
            "alias_moved": alias,
            **(_sweep_if_create_retried(kms, old.keystore) or {}),
        }

    try:
        # The journal is committed before the locked transaction starts, so that a
        # crash after CreateKey still leaves a trace of the new KMS key.
        with _creation_journal(current.keystore, new_id, Operation.RENEW, actor) as creation:
            try:
                _operate(actor, key_id, Operation.RENEW, step)
            except DatabaseError:
                # The commit itself failed after the alias moved (the database went away): the
                # old key is still the alias's owner, so it gets the alias back now, before the
                # journal schedules the new KMS key for deletion.
                for alias in moved:
                    _give_alias_back(current, alias, actor)
                raise
    finally:
        custody.wipe(material)
    assert renewed is not None, "renew has no no-op state: a renew that returns ran its step"
    return Done(renewed, Outcome.SUCCESS)


def recover_pending_creations(*, actor: Actor, older_than: dt.timedelta | None = None) -> int:
    """Find KMS keys whose creation never committed (a crash mid-create) and schedule them for deletion.

    Returns the number of journal entries resolved. Run by reconciliation; safe to
    run any time: an entry whose creator still holds its lease (see
    :func:`_creation_lease`) is left alone, any other is resolved at once. Without
    PostgreSQL, entries older than ``older_than`` (default :func:`creation_lease_seconds`) are.
    """
    resolved = 0
    for journal in PendingCreation.objects.select_related("keystore").order_by("started_at"):
        with _abandoned(journal, older_than) as abandoned:
            if not abandoned:
                continue
            try:
                resolved += _resolve_journal(actor, journal)
            except AwsError as exc:  # this keystore's AWS is unreachable: the row stays, the others go on
                logger.warning(
                    "could not resolve an interrupted key operation",
                    extra={"key_id": str(journal.key_id), "operation": journal.operation, "aws_code": exc.code},
                )
    return resolved


def _resolve_journal(actor: Actor, journal: PendingCreation) -> int:
    """One abandoned creation: its Key row committed (only the journal is left), or its KMS keys are orphans."""
    if not PendingCreation.objects.filter(pk=journal.pk).exists():
        return 0  # finished between the listing and the lease
    if journal.operation in _FINISHERS:
        return _finish_interrupted(actor, journal)
    if Key.objects.filter(pk=journal.key_id).exists():
        journal.delete()
        return 1
    kms = aws.kms_for(journal.keystore, operation=Operation.CLEANUP, acting=actor)
    arns = [journal.kms_key_arn] if journal.kms_key_arn else []
    arns += [a for a in kms.find_keys_tagged(settings.BYOK_TAG_KEY, str(journal.key_id)) if a not in arns]
    for arn in arns:
        _schedule_orphan_deletion(kms, arn)
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.RECONCILE,
            outcome=Outcome.SUCCESS,
            keystore=journal.keystore,
            reason="orphan_removed",
            kms_request_ids=kms.request_ids,
            details={"interrupted": journal.operation, "key_id": str(journal.key_id), "kms_keys": arns},
        )
        journal.delete()
    return 1


# --- download (two-person rule) -----------------------------------------------------


def key_prepare_download(*, actor: Actor, key_id: uuid.UUID, public_key_pem: str) -> Done:
    """Register the public key a second person's download will be wrapped with, and mark who prepared it."""

    def step(key: Key, kms: KmsSession | None) -> dict[str, Any]:
        _refuse_while_pending(key)
        # Checked after the caller's role (in _operate), so outsiders learn nothing from the answer.
        try:
            fingerprint = custody.public_key_fingerprint(public_key_pem or "")
        except ValidationError as exc:
            raise ValidationError({"public_key": exc.messages}) from exc
        key.download_public_key = public_key_pem.strip()
        key.download_prepared_by_iss, key.download_prepared_by_sub = actor.identity
        key.download_prepared_at = timezone.now()
        return {"public_key_fingerprint": fingerprint}

    return _operate(actor, key_id, Operation.PREPARE_DOWNLOAD, step, needs_kms=False)


@dataclass(frozen=True)
class PendingDownload:
    """A prepared, not yet used download, as the people involved may see it (never the material)."""

    prepared_by_iss: str
    prepared_by_sub: str
    prepared_at: dt.datetime
    expires_at: dt.datetime
    public_key_fingerprint: str

    @property
    def prepared_by(self) -> str:
        return f"{self.prepared_by_iss}|{self.prepared_by_sub}"

    def as_dict(self) -> dict[str, str]:
        return {
            "prepared_by": self.prepared_by,
            "prepared_at": self.prepared_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "public_key_fingerprint": self.public_key_fingerprint,
        }


def pending_download(key: Key, *, include_expired: bool = False) -> PendingDownload | None:
    """The key's prepared download while it can still be used (or at all); None if none is prepared."""
    if not key.download_public_key or key.download_prepared_at is None:
        return None
    if download_preparation_expired(key) and not include_expired:
        return None
    return PendingDownload(
        prepared_by_iss=key.download_prepared_by_iss,
        prepared_by_sub=key.download_prepared_by_sub,
        prepared_at=key.download_prepared_at,
        expires_at=key.download_prepared_at + dt.timedelta(seconds=settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS),
        public_key_fingerprint=custody.public_key_fingerprint(key.download_public_key),
    )


def _refuse_while_pending(key: Key) -> None:
    """One preparation at a time: another custodian must not silently swap in their own public key.

    The downloader would wrap the material for whoever prepared last; so a pending
    preparation must be withdrawn (by its preparer or a keystore admin, audited)
    before a new one is made. An expired one no longer counts.
    """
    pending = pending_download(key)
    if pending is not None:
        raise Conflict(
            "A download of this key is already prepared and not yet used; its preparer or a keystore admin "
            "must withdraw it before another can be prepared.",
            state=key.state,
            reason="download_pending",
            **pending.as_dict(),
        )


def may_withdraw_download(actor: Actor, key: Key) -> bool:
    """Who may withdraw a key's prepared download: the person who prepared it, or an admin of its keystore.

    The one place of this rule: :func:`key_withdraw_download` enforces it and the key
    page offers the withdraw button by it. (The portal's own jobs act without a user.)
    """
    if actor.user is None or (key.download_prepared_by_iss, key.download_prepared_by_sub) == actor.identity:
        return True
    role = role_in(actor.user, key.keystore)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.ADMIN]


def key_withdraw_download(*, actor: Actor, key_id: uuid.UUID) -> Done:
    """Withdraw a prepared download (see :func:`may_withdraw_download` for who may), so nobody can use it."""

    def step(key: Key, kms: KmsSession | None) -> dict[str, Any]:
        if not key.download_public_key:
            raise Conflict("No download has been prepared for this key.", state=key.state, reason="not_prepared")
        if not may_withdraw_download(actor, key):
            raise PermissionRefused(
                f"Only the person who prepared this download, or an admin of keystore {key.keystore.name!r}, "
                "may withdraw it."
            )
        prepared_by = (key.download_prepared_by_iss, key.download_prepared_by_sub)
        details = {
            "prepared_by": "|".join(prepared_by),
            "prepared_at": key.download_prepared_at.isoformat() if key.download_prepared_at else None,
            "public_key_fingerprint": custody.public_key_fingerprint(key.download_public_key),
            "expired": download_preparation_expired(key),
        }
        key.download_public_key = ""
        key.download_prepared_by_iss = key.download_prepared_by_sub = ""
        key.download_prepared_at = None
        return details

    return _operate(actor, key_id, Operation.WITHDRAW_DOWNLOAD, step, needs_kms=False)


@dataclass(frozen=True)
class WrappedVersion:
    """One material version in a download, wrapped like the current one (SPEC §16)."""

    version: int
    state: str
    kcv: str
    wrapped_key_material: bytes

    @property
    def wrapped_b64(self) -> str:
        return base64.b64encode(self.wrapped_key_material).decode()


@dataclass(frozen=True)
class WrappedDownload:
    """What a download hands out: the material wrapped for the prepared public key, and its check values.

    ``wrapping_algorithm`` depends on the key spec (SPEC §9): RSAES_OAEP_SHA_256 for
    symmetric and HMAC material, RSA_AES_KEY_WRAP_SHA_256 for a PKCS#8 private key.
    ``wrapped_key_material`` and ``kcv`` are the current version's; ``materials`` has every
    version the key holds (SPEC §10: old ciphertexts need theirs), oldest first.
    """

    key_id: uuid.UUID
    wrapped_key_material: bytes
    kcv: str
    wrapping_algorithm: str = custody.download_wrapping_algorithm()
    key_spec: str = DEFAULT_SPEC
    public_key_sha256: str = ""
    # SHA-256 of the public key it is wrapped for: the downloader checks it is the one they expect.
    public_key_fingerprint: str = ""
    version: int = 1
    materials: tuple[WrappedVersion, ...] = ()

    @property
    def wrapped_b64(self) -> str:
        return base64.b64encode(self.wrapped_key_material).decode()


def _wrap_version(key: Key, version: KeyMaterial) -> WrappedVersion:
    material = custody.unseal(key.pk, version.material_sealed or b"", version.version)
    try:
        wrapped = custody.wrap_for_download(material, key.download_public_key, key.key_spec)
    finally:
        custody.wipe(material)
    return WrappedVersion(version=version.version, state=version.state, kcv=version.kcv, wrapped_key_material=wrapped)


def download_preparation_expired(key: Key, now: dt.datetime | None = None) -> bool:
    if key.download_prepared_at is None:
        return False
    ttl = dt.timedelta(seconds=settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS)
    return key.download_prepared_at + ttl <= (now or timezone.now())


def key_download(*, actor: Actor, key_id: uuid.UUID) -> WrappedDownload:
    """Release the material wrapped for the prepared public key, to someone other than the preparer (once)."""
    released: WrappedDownload | None = None

    def step(key: Key, kms: KmsSession | None) -> dict[str, Any]:
        nonlocal released
        if not key.download_public_key:
            raise Conflict("No download has been prepared for this key.", state=key.state, reason="not_prepared")
        if download_preparation_expired(key):
            raise Conflict(
                "The prepared download has expired; prepare it again.", state=key.state, reason="preparation_expired"
            )
        if (key.download_prepared_by_iss, key.download_prepared_by_sub) == actor.identity:
            raise TwoPersonRuleViolation(
                "Two-person rule: the person who prepared this download cannot also download it."
            )
        versions = materials.held_versions(key)
        current = next((v for v in versions if v.state == MaterialState.CURRENT), None)
        if current is None or any(not v.material_sealed for v in versions):
            raise Conflict("The portal holds no material for this key.", state=key.state)
        fingerprint = custody.public_key_fingerprint(key.download_public_key)
        wrapped = tuple(_wrap_version(key, version) for version in versions)
        released = WrappedDownload(
            key_id=key.pk,
            wrapped_key_material=next(w.wrapped_key_material for w in wrapped if w.version == current.version),
            kcv=key.kcv,
            wrapping_algorithm=custody.download_wrapping_algorithm(key.key_spec),
            key_spec=key.key_spec,
            public_key_sha256=key.public_key_sha256,
            public_key_fingerprint=fingerprint,
            version=current.version,
            materials=wrapped,
        )
        prepared_by = f"{key.download_prepared_by_iss}|{key.download_prepared_by_sub}"
        key.download_public_key = ""
        key.download_prepared_by_iss = key.download_prepared_by_sub = ""
        key.download_prepared_at = None
        return {
            "public_key_fingerprint": fingerprint,
            "prepared_by": prepared_by,
            "versions": [w.version for w in wrapped],
        }

    _operate(actor, key_id, Operation.DOWNLOAD, step, needs_kms=False)
    assert released is not None, "download has no no-op state: a download that returns ran its step"
    return released
