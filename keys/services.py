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
from byok_portal import aws
from byok_portal.aws import AwsError, KmsSession
from byok_portal.errors import Conflict, NotFound, PermissionRefused, ServiceError, TwoPersonRuleViolation
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys import custody
from keys.lifecycle import LIFECYCLE, InvalidState, decide
from keys.models import Key, PendingCreation
from keys.specs import DEFAULT_SPEC, spec_of, validate_spec_and_usage
from keys.validation import validate_alias, validate_tags
from keystores.models import ROLE_RANK, Keystore, KeystoreState, Role
from keystores.selectors import require_role, role_in

logger = logging.getLogger("byok.keys")

INVALID_STATE_CODE = "KMSInvalidStateException"
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
            error=f"{exc.operation}: {exc.code}: {exc.message}",
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
            kms = aws.kms_for(key.keystore) if needs_kms else None
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


def _tolerate_invalid_state(kms: KmsSession, kms_key_id: str, exc: AwsError, done: set[KmsState]) -> None:
    """A step refused with KMSInvalidStateException may simply have happened already (a retry)."""
    if exc.code != INVALID_STATE_CODE:
        raise exc
    if kms.describe(kms_key_id).state not in done:
        raise exc


def _import_same_material(key: Key, kms: KmsSession) -> None:
    """Import the key's own material (again). KMS accepts only the same material once a key had some."""
    if not key.material_sealed:
        raise Conflict("The portal holds no material for this key.", state=key.state)
    material = custody.unseal(key.pk, key.material_sealed)
    try:
        kms.import_material(key.kms_key_id, material, spec_of(key.key_spec).wrapping_algorithm)
    except AwsError as exc:
        # Already holding (this same) material, e.g. a retried activate: nothing to do.
        _tolerate_invalid_state(kms, key.kms_key_id, exc, {KmsState.ENABLED, KmsState.DISABLED})
    finally:
        custody.wipe(material)


def _disable_and_delete_material(key: Key, kms: KmsSession) -> None:
    """Disable first: DisableKey fails once the key is PendingImport (NOTES.md)."""
    try:
        kms.disable(key.kms_key_id)
    except AwsError as exc:
        _tolerate_invalid_state(kms, key.kms_key_id, exc, {KmsState.EMPTY})
        return  # already disabled and empty: a retried deactivate
    kms.delete_material(key.kms_key_id)


# --- operations -----------------------------------------------------------------


def key_deactivate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    def step(key: Key, kms: KmsSession) -> None:
        _disable_and_delete_material(key, kms)
        key.kms_state = KmsState.EMPTY

    return _operate(actor, key_id, Operation.DEACTIVATE, step)


def _reimport_and_enable(key: Key, kms: KmsSession) -> None:
    """Activate and upload alike: the same material back into KMS, and the key enabled."""
    _import_same_material(key, kms)
    kms.enable(key.kms_key_id)
    key.kms_state = KmsState.ENABLED
    key.drift = []  # whatever reconciliation found missing is back


def key_activate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    return _operate(actor, key_id, Operation.ACTIVATE, _reimport_and_enable)


def key_upload(*, actor: Actor, key_id: uuid.UUID) -> Done:
    return _operate(actor, key_id, Operation.UPLOAD, _reimport_and_enable)


def key_recreate(*, actor: Actor, key_id: uuid.UUID) -> Done:
    """A new KMS key holding this key's own material, for a key whose KMS key no longer exists in AWS.

    AWS accepts the same material in another KMS key but binds each ciphertext to the
    KMS key that made it: what was encrypted under the vanished key stays lost, while the
    material, its KCV, the alias, the tags and the key's history carry on. Refused while
    the old KMS key exists. A KMS key left by an interrupted attempt (found by the
    portal's tag) is adopted rather than duplicated, so retrying converges.
    """

    def step(key: Key, kms: KmsSession) -> dict[str, Any]:
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
                _disable_and_delete_material(key, kms)
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
        try:
            deletion_date = kms.schedule_deletion(key.kms_key_id, window)
        except AwsError as exc:
            if exc.code != INVALID_STATE_CODE:
                raise
            info = kms.describe(key.kms_key_id)  # a retry: AWS already counts down
            if info.state != KmsState.PENDING_DELETION or info.deletion_date is None:
                raise
            deletion_date = info.deletion_date
        key.deletion_date = deletion_date
        key.kms_state = KmsState.PENDING_DELETION
        return {"pending_window_days": window, "deletion_date": deletion_date.isoformat()}

    return _operate(actor, key_id, Operation.SCHEDULE_DELETION, step)


def key_cancel_deletion(*, actor: Actor, key_id: uuid.UUID) -> Done:
    def step(key: Key, kms: KmsSession) -> None:
        try:
            kms.cancel_deletion(key.kms_key_id)
        except AwsError as exc:
            _tolerate_invalid_state(kms, key.kms_key_id, exc, {KmsState.DISABLED, KmsState.EMPTY})
        # CancelKeyDeletion leaves the key Disabled *with* its material; the lifecycle says EMPTY.
        try:
            kms.delete_material(key.kms_key_id)
        except AwsError as exc:
            _tolerate_invalid_state(kms, key.kms_key_id, exc, {KmsState.EMPTY})
        key.deletion_date = None
        key.kms_state = KmsState.EMPTY

    with _kms_intent(key_id, Operation.CANCEL_DELETION):
        return _operate(actor, key_id, Operation.CANCEL_DELETION, step)


def cleaned_up_fields() -> dict[str, Any]:
    """What cleanup sets on a key besides its state: the material and everything tied to it are gone.

    The one list of it, used by :func:`key_cleanup` and by the batched daily cleanup.
    A deleted key is never reconciled again, so its drift findings go too.
    """
    return {
        "material_sealed": None,
        "kms_state": KmsState.UNKNOWN,
        "drift": [],
        "download_public_key": "",
        "download_prepared_by_iss": "",
        "download_prepared_by_sub": "",
        "download_prepared_at": None,
    }


def key_cleanup(*, actor: Actor, key_id: uuid.UUID, now: dt.datetime | None = None) -> Done:
    """Daily cleanup of one key: once its grace period is over, destroy the portal's copy of the material."""
    moment = now or timezone.now()

    def step(key: Key, kms: KmsSession | None) -> dict[str, Any]:
        if key.deletion_date is None or key.deletion_date > moment:
            raise Conflict(
                "The deletion waiting period of this key is not over yet.", state=key.state, reason="grace_not_over"
            )
        for field, value in cleaned_up_fields().items():
            setattr(key, field, value)
        return {"deletion_date": key.deletion_date.isoformat()}

    return _operate(actor, key_id, Operation.CLEANUP, step, needs_kms=False)


# --- update -----------------------------------------------------------------------


def _alias_taken(keystore: Keystore, alias: str, exclude: uuid.UUID | None) -> Key | None:
    """A live key in the same AWS account and region already using ``alias`` (AWS aliases are per account+region)."""
    qs = Key.objects.filter(
        keystore__aws_account_id=keystore.aws_account_id, keystore__region=keystore.region, alias=alias
    ).exclude(state=KeyState.DELETED)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    return qs.first()


def _check_alias_free(keystore: Keystore, alias: str, exclude: uuid.UUID | None = None) -> None:
    if alias and _alias_taken(keystore, alias, exclude):
        raise ValidationError({"alias": f"{alias} is already used by another key in this account and region."})


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
) -> Done:
    """Change name, expiry, tags and alias; tags and alias are applied to the KMS key.

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
                _check_alias_free(key.keystore, alias, exclude=key.pk)
        if tags is not _UNSET:
            tags = validate_tags(tags)
        changed: dict[str, Any] = {}
        if name is not _UNSET and name != key.name:
            changed["name"] = {"from": key.name, "to": name}
            key.name = name
        if expires is not _UNSET and expires != key.expires:
            changed["expires"] = {"from": _iso(key.expires), "to": _iso(expires)}
            key.expires = expires
            key.expiry_warned_on = None
        if tags is not _UNSET and tags != key.tags:
            removed = sorted(set(key.tags) - set(tags))
            kms.remove_tags(key.kms_key_id, removed)
            kms.set_tags(key.kms_key_id, tags)
            changed["tags"] = {"removed": removed, "set": sorted(tags)}
            key.tags = tags
        if alias is not _UNSET and alias != key.alias:
            if alias:
                kms.point_alias(alias, key.kms_key_id)
            if key.alias:
                kms.delete_alias(key.alias)
            changed["alias"] = {"from": key.alias, "to": alias}
            key.alias = alias
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

    @property
    def arn(self) -> str:
        return self.journal.kms_key_arn


@contextmanager
def _creation_journal(keystore: Keystore, key_id: uuid.UUID, operation: Operation) -> Iterator[_Creation]:
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
                _undo_creation(keystore, creation)
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
    lock = creation_lock_id(journal.key_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock])
        taken = bool(cursor.fetchone()[0])
    if not taken:
        yield False  # its creator is alive and working: not ours to touch
        return
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock])


def _undo_creation(keystore: Keystore, creation: _Creation) -> None:
    """Best effort: schedule the half-created KMS key for deletion so no orphan is left behind."""
    try:
        kms = aws.kms_for(keystore)
        if creation.alias_created:
            kms.delete_alias(creation.alias_created)
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
    try:
        kms.schedule_deletion(arn.rsplit("/", 1)[-1], MIN_WINDOW)
    except AwsError as exc:
        if exc.code not in (INVALID_STATE_CODE, "NotFoundException"):  # already pending deletion, or gone
            raise


def schedule_orphan_deletion(kms: KmsSession, arn: str) -> None:
    """Schedule a KMS key no portal row owns for deletion (shortest window: it never held anyone's data)."""
    _schedule_orphan_deletion(kms, arn)


def is_portal_key_id(value: str) -> bool:
    """Whether a tag value can be one of the portal's key ids (the portal's tag always carries a UUID)."""
    return bool(value) and _is_uuid(value)


def _live_alias_owner(keystore: Keystore, alias: str) -> Key | None:
    return _alias_taken(keystore, alias, None) if alias else None


def _stranded_portal_alias(kms: KmsSession, keystore: Keystore, alias: str, target_arn: str) -> bool:
    """True if ``alias`` points at a KMS key the portal made (by its tag) and no live portal key uses the alias.

    Such an alias was left behind by a creation that failed after CreateAlias acted
    (its answer lost, the key then scheduled for deletion): it is the portal's to reuse.
    """
    if _live_alias_owner(keystore, alias) is not None:
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


def release_stranded_aliases(kms: KmsSession, keystore: Keystore, aliases: list[str]) -> tuple[list[str], list[str]]:
    """Aliases pointing at an orphaned portal KMS key: back to the live portal key named by them, else deleted.

    Returns ``(repointed, deleted)``. An alias whose live owner cannot take it (its
    KMS key is pending deletion, which UpdateAlias refuses) is left for a later run.
    """
    repointed: list[str] = []
    deleted: list[str] = []
    for alias in aliases:
        owner = _live_alias_owner(keystore, alias)
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
) -> str:
    journal = creation.journal
    creation.create_attempted = True
    arn = kms.create_external_key(
        description=f"BYOK Portal key {name}",
        tags=_kms_tags(journal.key_id, tags),
        key_spec=key_spec,
        key_usage=key_usage,
    )
    # Remember the ARN at once: it is how an orphan is found after a crash. (Inside a
    # renew this rolls back with the transaction; the tag still finds the key.)
    PendingCreation.objects.filter(pk=journal.pk).update(kms_key_arn=arn)
    journal.kms_key_arn = arn
    kms.import_material(arn.rsplit("/", 1)[-1], material, spec_of(key_spec).wrapping_algorithm)
    return arn


def _material_fields(key_id: uuid.UUID, key_spec: str, material: custody.Material) -> dict[str, Any]:
    """A new key row's material columns: the sealed material and its check values (SPEC §9)."""
    checks = custody.check_values(key_spec, material)
    return {
        "kcv": checks.kcv,
        "public_key": checks.public_key,
        "public_key_sha256": checks.public_key_sha256,
        "material_sealed": custody.seal(key_id, material),
    }


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
) -> Done:
    """Create a KMS key (EXTERNAL) of ``key_spec``/``key_usage``, generate material, import it, set alias and tags.

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
    validate_alias(alias)
    clean_tags = validate_tags(tags or {})
    _check_alias_free(keystore, alias)

    key_id = uuid.uuid4()
    material = custody.generate_material(key_spec)
    kms = aws.kms_for(keystore)
    try:
        with _creation_journal(keystore, key_id, Operation.CREATE) as creation:
            arn = _provision_kms_key(
                kms, creation, name=name, tags=clean_tags, material=material, key_spec=key_spec, key_usage=key_usage
            )
            if alias:
                try:
                    _claim_alias(kms, keystore, alias, arn)
                except AwsError as exc:
                    if exc.code != "AlreadyExistsException":  # someone else's alias: never remove it
                        creation.alias_created = alias
                    raise
                creation.alias_created = alias
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
                    **_material_fields(key_id, key_spec, material),
                    created_by=actor.user,
                    updated_by=actor.user,
                )
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
                details={"name": name, "alias": alias, "key_spec": key_spec, "key_usage": key_usage},
            )
        raise
    finally:
        custody.wipe(material)
    return Done(key, Outcome.SUCCESS)


def _point_alias_back(kms: KmsSession, alias: str, old: Key) -> None:
    """Undo a half-done alias move (the UpdateAlias may have happened even if its response was lost)."""
    try:
        kms.point_alias(alias, old.kms_key_id)
    except AwsError:
        logger.warning("could not move an alias back after a failed renew", extra={"key_id": str(old.pk)})


def _give_alias_back(old: Key, alias: str) -> None:
    try:
        kms = aws.kms_for(old.keystore)
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
        arn = _provision_kms_key(
            kms,
            creation,
            name=new_name,
            tags=dict(old.tags),
            material=material,
            key_spec=old.key_spec,
            key_usage=old.key_usage,
        )
        alias = old.alias
        try:
            if alias:
                # Both keys have the same spec and usage, as UpdateAlias requires.
                kms.point_alias(alias, arn.rsplit("/", 1)[-1])
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
                **_material_fields(new_id, old.key_spec, material),
                replaces=old,
                created_by=actor.user,
                updated_by=actor.user,
            )
        except BaseException:
            # The alias may have moved even if UpdateAlias's response was lost: move it back.
            if alias:
                _point_alias_back(kms, alias, old)
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
        with _creation_journal(current.keystore, new_id, Operation.RENEW) as creation:
            try:
                _operate(actor, key_id, Operation.RENEW, step)
            except DatabaseError:
                # The commit itself failed after the alias moved (the database went away): the
                # old key is still the alias's owner, so it gets the alias back now, before the
                # journal schedules the new KMS key for deletion.
                for alias in moved:
                    _give_alias_back(current, alias)
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
    kms = aws.kms_for(journal.keystore)
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
class WrappedDownload:
    """What a download hands out: the material wrapped for the prepared public key, and its check values.

    ``wrapping_algorithm`` depends on the key spec (SPEC §9): RSAES_OAEP_SHA_256 for
    symmetric and HMAC material, RSA_AES_KEY_WRAP_SHA_256 for a PKCS#8 private key.
    """

    key_id: uuid.UUID
    wrapped_key_material: bytes
    kcv: str
    wrapping_algorithm: str = custody.download_wrapping_algorithm()
    key_spec: str = DEFAULT_SPEC
    public_key_sha256: str = ""
    # SHA-256 of the public key it is wrapped for: the downloader checks it is the one they expect.
    public_key_fingerprint: str = ""

    @property
    def wrapped_b64(self) -> str:
        return base64.b64encode(self.wrapped_key_material).decode()


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
        if not key.material_sealed:
            raise Conflict("The portal holds no material for this key.", state=key.state)
        fingerprint = custody.public_key_fingerprint(key.download_public_key)
        material = custody.unseal(key.pk, key.material_sealed)
        try:
            wrapped = custody.wrap_for_download(material, key.download_public_key, key.key_spec)
        finally:
            custody.wipe(material)
        released = WrappedDownload(
            key_id=key.pk,
            wrapped_key_material=wrapped,
            kcv=key.kcv,
            wrapping_algorithm=custody.download_wrapping_algorithm(key.key_spec),
            key_spec=key.key_spec,
            public_key_sha256=key.public_key_sha256,
            public_key_fingerprint=fingerprint,
        )
        prepared_by = f"{key.download_prepared_by_iss}|{key.download_prepared_by_sub}"
        key.download_public_key = ""
        key.download_prepared_by_iss = key.download_prepared_by_sub = ""
        key.download_prepared_at = None
        return {"public_key_fingerprint": fingerprint, "prepared_by": prepared_by}

    _operate(actor, key_id, Operation.DOWNLOAD, step, needs_kms=False)
    assert released is not None, "download has no no-op state: a download that returns ran its step"
    return released
