"""The portal's background work on keys: daily cleanup, reconciliation with KMS, expiry warnings.

Celery tasks (:mod:`keys.tasks`) and the ``byok_cleanup`` / ``byok_reconcile``
management commands are thin callers of the functions here. Every function is
idempotent, because tasks run with ``acks_late`` and may be delivered twice, and
may run in two workers at once:

- cleanup claims due keys with ``SELECT ... FOR UPDATE SKIP LOCKED``, so a key is
  cleaned by exactly one run and the other run never sees it (no refusal event);
- reconciliation audits only a *change* of drift, so a repeated run adds nothing;
- an expiry warning claims the key for the day with a conditional UPDATE first.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor
from audit.models import Outcome
from audit.services import Entry, record, record_many
from byok_portal import aws
from byok_portal.aws import AwsError, KmsKeyInfo, KmsSession
from byok_portal.errors import ServiceError
from keys import services
from keys.lifecycle import LIFECYCLE, KeyState, KmsState, Operation
from keys.models import Key
from keystores.models import Keystore, KeystoreState

logger = logging.getLogger("byok.jobs")

NOT_FOUND_CODE = "NotFoundException"
# Fields a cleanup batch needs to audit a key; the sealed material is never loaded.
_CLEANUP_FIELDS = ("id", "state", "alias", "kms_key_arn", "deletion_date", "keystore", "keystore__id", "keystore__name")
# Keys still in use: a REPLACED key was renewed already, and one pending deletion is on its way out.
EXPIRY_WARNING_STATES = (KeyState.ACTIVE, KeyState.INACTIVE)

T = TypeVar("T")


# --- daily cleanup ------------------------------------------------------------------


@dataclass
class CleanupSummary:
    """What one cleanup run did."""

    cleaned: int = 0
    batches: int = 0


def cleanup_due_keys(
    *, actor: Actor, now: dt.datetime | None = None, batch_size: int | None = None, until: float | None = None
) -> CleanupSummary:
    """Move every key whose deletion grace period is over to ``DELETED`` and destroy its material.

    Works in batches of ``batch_size`` keys (``BYOK_CLEANUP_BATCH_SIZE``), oldest
    deletion date first, one transaction per batch: memory stays bounded and the
    cleanup's own queries grow with batches, not keys (one SELECT and one UPDATE
    each; the audit trail adds one event per key).

    Rows are claimed with ``FOR UPDATE SKIP LOCKED``: a second run at the same time
    (two workers, a redelivered task) takes other keys or none, and a key a
    lifecycle operation is holding is left for the next run. Once a batch commits
    its keys are ``DELETED`` and no run selects them again.

    Past ``until`` (a ``time.monotonic()`` value) no new batch starts: the task
    hands the rest to a new task, so none runs near the broker's visibility timeout.
    """
    moment = now or timezone.now()
    size = batch_size or settings.BYOK_CLEANUP_BATCH_SIZE
    summary = CleanupSummary()
    while True:
        with transaction.atomic():
            batch = list(
                services.due_for_cleanup(moment)
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("keystore")
                .only(*_CLEANUP_FIELDS)
                .order_by("deletion_date", "id")[:size]
            )
            if not batch:
                break
            _clean_batch(actor, batch)
        summary.cleaned += len(batch)
        summary.batches += 1
        if until is not None and time.monotonic() >= until:
            break
    if summary.cleaned:
        logger.info("cleanup finished", extra={"cleaned": summary.cleaned, "batches": summary.batches})
    return summary


def _clean_batch(actor: Actor, batch: Sequence[Key]) -> None:
    """Clean locked, due keys: what :func:`keys.services.key_cleanup` does to one key, for many at once."""
    # due_for_cleanup selects exactly the state the lifecycle table allows cleanup in; the target comes from it too.
    target = LIFECYCLE[Operation.CLEANUP].target
    Key.objects.filter(pk__in=[key.pk for key in batch]).update(
        state=target, **services.cleaned_up_fields(), updated_by=None, updated_at=timezone.now()
    )
    # One head lock and one INSERT for the batch's events: statements grow with batches, not keys.
    record_many(
        [
            Entry(
                actor=actor,
                operation=Operation.CLEANUP,
                outcome=Outcome.SUCCESS,
                key=key,
                state_before=key.state,
                state_after=str(target),
                details={"deletion_date": key.deletion_date.isoformat() if key.deletion_date else None},
            )
            for key in batch
        ]
    )


# --- reconciliation ------------------------------------------------------------------


class RateLimiter:
    """At most ``per_second`` KMS calls per second for one keystore (0: no limit).

    botocore's adaptive retries already back off when KMS throttles; this keeps a
    large keystore from using up the account's shared KMS request quota in the
    first place, which the customer's own workloads need too.
    """

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._next = 0.0

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.interval:
            delay = self._next - self._clock()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next, self._clock()) + self.interval
        return fn(*args)


def default_rate_limiter() -> RateLimiter:
    return RateLimiter(settings.BYOK_RECONCILE_KMS_CALLS_PER_SECOND)


@dataclass(frozen=True)
class Finding:
    """One disagreement between the portal and KMS; ``message`` is what custodians read."""

    code: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What KMS says of a key right now, in the portal's terms."""

    kms_state: KmsState
    aws_state: str
    findings: tuple[Finding, ...]
    request_ids: tuple[str, ...]

    @property
    def drift(self) -> list[str]:
        return [finding.message for finding in self.findings]

    @property
    def codes(self) -> list[str]:
        return [finding.code for finding in self.findings]


# Portal state -> the KMS states that agree with it (SPEC §2).
EXPECTED_KMS_STATES: dict[str, set[KmsState]] = {
    KeyState.ACTIVE: {KmsState.ENABLED},
    KeyState.REPLACED: {KmsState.ENABLED},
    KeyState.INACTIVE: {KmsState.EMPTY},
    KeyState.PENDING_DELETION: {KmsState.PENDING_DELETION},
}
MATERIAL_MISSING = "material_missing"


def _state_findings(key: Key, info: KmsKeyInfo) -> list[Finding]:
    if info.state in EXPECTED_KMS_STATES[key.state]:
        return []
    if info.state == KmsState.PENDING_DELETION:
        when = info.deletion_date.date().isoformat() if info.deletion_date else "an unknown date"
        return [
            Finding(
                "scheduled_for_deletion",
                f"The KMS key was scheduled for deletion directly in AWS (deleted on {when}), "
                f"although the portal key is {key.state}.",
            )
        ]
    if key.state == KeyState.PENDING_DELETION:
        return [
            Finding(
                "deletion_cancelled",
                f"The KMS key is no longer pending deletion in AWS (AWS state {info.aws_state}): "
                "its deletion was cancelled outside the portal.",
            )
        ]
    if key.state in (KeyState.ACTIVE, KeyState.REPLACED) and info.state == KmsState.EMPTY:
        return [
            Finding(
                MATERIAL_MISSING,
                f"The KMS key has no key material (AWS state PendingImport) although the portal key is {key.state}: "
                "nothing can encrypt or decrypt with it until the material is uploaded again.",
            )
        ]
    if key.state in (KeyState.ACTIVE, KeyState.REPLACED) and info.state == KmsState.DISABLED:
        return [Finding("disabled_in_aws", f"The KMS key was disabled in AWS although the portal key is {key.state}.")]
    if key.state == KeyState.INACTIVE and info.state in (KmsState.ENABLED, KmsState.DISABLED):
        return [
            Finding(
                "material_present",
                f"The KMS key holds key material in AWS (AWS state {info.aws_state}) although the portal key is "
                "INACTIVE.",
            )
        ]
    return [Finding("unexpected_state", f"The KMS key is in AWS state {info.aws_state or 'unknown'}.")]


def _alias_findings(key: Key, kms: KmsSession, limiter: RateLimiter) -> list[Finding]:
    if not key.alias or key.state == KeyState.PENDING_DELETION:
        return []
    if key.alias in limiter.call(kms.aliases_of, key.kms_key_id):
        return []
    try:
        target = limiter.call(kms.describe, key.alias)
    except AwsError as exc:
        if exc.code != NOT_FOUND_CODE:
            raise
        return [Finding("alias_missing", f"The alias {key.alias} no longer exists in AWS.")]
    return [Finding("alias_moved", f"The alias {key.alias} points to another KMS key in AWS: {target.arn}.")]


def _tag_findings(key: Key, kms: KmsSession, limiter: RateLimiter) -> list[Finding]:
    if key.state == KeyState.PENDING_DELETION:
        return []
    expected = {**key.tags, settings.BYOK_TAG_KEY: str(key.pk)}
    actual = limiter.call(kms.tags_of, key.kms_key_id)
    missing = sorted(name for name in expected if name not in actual)
    changed = sorted(name for name in expected if name in actual and actual[name] != expected[name])
    if not (missing or changed):
        return []
    parts = [f"missing {', '.join(missing)}"] if missing else []
    parts += [f"changed {', '.join(changed)}"] if changed else []
    return [Finding("tags_changed", f"The KMS key's tags were changed in AWS: {'; '.join(parts)}.")]


def observe(key: Key, kms: KmsSession, limiter: RateLimiter) -> Observation:
    """DescribeKey, aliases and tags of the key's KMS key, compared with the portal's view."""
    first_request = len(kms.request_ids)
    try:
        info = limiter.call(kms.describe, key.kms_key_id)
    except AwsError as exc:
        if exc.code != NOT_FOUND_CODE:
            raise
        # A key pending deletion disappears from AWS when its window ends: that is the plan, not drift.
        gone = (
            []
            if key.state == KeyState.PENDING_DELETION
            else [Finding("kms_key_gone", f"The KMS key {key.kms_key_arn} no longer exists in AWS.")]
        )
        return Observation(KmsState.UNKNOWN, "", tuple(gone), tuple(kms.request_ids[first_request:]))
    findings = _state_findings(key, info) + _alias_findings(key, kms, limiter) + _tag_findings(key, kms, limiter)
    return Observation(info.state, info.aws_state, tuple(findings), tuple(kms.request_ids[first_request:]))


class KeyResult(StrEnum):
    """What reconciling one key came to."""

    IN_STEP = "in_step"
    DRIFT = "drift"
    REPAIRED = "repaired"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass
class ReconcileSummary:
    """Counts of :class:`KeyResult` over a run, plus orphaned KMS keys resolved."""

    checked: int = 0
    in_step: int = 0
    drift: int = 0
    repaired: int = 0
    skipped: int = 0
    errors: int = 0
    orphans_resolved: int = 0
    keystores: int = 0
    failed_keystores: list[str] = field(default_factory=list)

    def add(self, result: KeyResult) -> None:
        if result != KeyResult.SKIPPED:
            self.checked += 1
        name = "errors" if result == KeyResult.ERROR else result.value
        setattr(self, name, getattr(self, name) + 1)

    def merge(self, other: ReconcileSummary) -> None:
        for name in ("checked", "in_step", "drift", "repaired", "skipped", "errors", "orphans_resolved", "keystores"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed_keystores += other.failed_keystores


def _store(actor: Actor, seen: Key, observation: Observation, *, repairing: bool) -> bool:
    """Save what was observed; audit and log a change of drift. False if the key changed meanwhile.

    KMS was asked without holding the row lock (a slow AWS must not block custodians);
    if a lifecycle operation changed the key since, the observation may describe its
    half-way point, so it is dropped and the next run looks again.
    """
    with transaction.atomic():
        key = Key.objects.select_for_update(of=("self",)).select_related("keystore").filter(pk=seen.pk).first()
        if key is None or key.state != seen.state or key.updated_at != seen.updated_at:
            return False
        previous, drift = list(key.drift), observation.drift
        Key.objects.filter(pk=key.pk).update(
            kms_state=observation.kms_state, kms_checked_at=timezone.now(), drift=drift
        )
        if drift == previous:
            return True
        reason = "drift_resolved" if not drift else "drift_found" if not previous else "drift_changed"
        record(
            actor=actor,
            operation=Operation.RECONCILE,
            outcome=Outcome.SUCCESS,
            key=key,
            reason=reason,
            state_before=key.state,
            state_after=key.state,
            kms_request_ids=observation.request_ids,
            details={
                "drift": drift,
                "codes": observation.codes,
                "previous_drift": previous,
                "kms_state": str(observation.kms_state),
                "aws_state": observation.aws_state,
                "auto_reupload": repairing,
            },
        )
    log = logger.info if reason == "drift_resolved" else logger.warning
    log(
        "kms drift " + reason.removeprefix("drift_"),
        extra={
            "event": "kms_drift",
            "reason": reason,
            "key_id": str(key.pk),
            "keystore_id": str(key.keystore_id),
            "alias": key.alias,
            "codes": ",".join(observation.codes),
            "kms_state": str(observation.kms_state),
        },
    )
    return True


def auto_reupload_enabled(keystore: Keystore) -> bool:
    return bool(keystore.auto_reupload or settings.BYOK_AUTO_REUPLOAD)


def reconcile_key(
    key_id: Any, *, actor: Actor, kms: KmsSession | None = None, limiter: RateLimiter | None = None
) -> KeyResult:
    """Compare one key with its KMS key, store ``kms_state`` and drift, and repair a lost material if allowed.

    Returns a :class:`KeyResult` value. AWS errors other than "key not found" are
    raised: they say nothing about the key, only that KMS could not be asked.
    """
    key = Key.objects.select_related("keystore").exclude(state=KeyState.DELETED).filter(pk=key_id).first()
    if key is None or not key.kms_key_arn:
        return KeyResult.SKIPPED
    kms = kms or aws.kms_for(key.keystore)
    limiter = limiter or default_rate_limiter()
    observation = observe(key, kms, limiter)
    repair = MATERIAL_MISSING in observation.codes and auto_reupload_enabled(key.keystore)
    if not _store(actor, key, observation, repairing=repair):
        return KeyResult.SKIPPED
    if not observation.findings:
        return KeyResult.IN_STEP
    if not repair:
        return KeyResult.DRIFT
    try:
        # key_upload locks the key, re-imports the same material, clears drift and audits as "upload".
        services.key_upload(actor=actor, key_id=key.pk)
    except (AwsError, ServiceError) as exc:
        logger.warning("automatic re-upload failed", extra={"key_id": str(key.pk), "error": str(exc)})
        return KeyResult.DRIFT
    # Look again: the upload only repairs the material, and other findings (an alias) may remain.
    key.refresh_from_db()
    after = observe(key, kms, limiter)
    _store(actor, key, after, repairing=False)
    return KeyResult.REPAIRED if not after.findings else KeyResult.DRIFT


def _reconcilable(keystore_id: Any) -> Any:
    return Key.objects.filter(keystore_id=keystore_id).exclude(state=KeyState.DELETED).exclude(kms_key_arn="")


def reconcile_keystore(
    keystore_id: Any,
    *,
    actor: Actor,
    after: uuid.UUID | None = None,
    limit: int | None = None,
    until: float | None = None,
) -> tuple[ReconcileSummary, uuid.UUID | None]:
    """Reconcile the keystore's keys in id order, starting after ``after``, at most ``limit`` of them.

    Returns the summary and the id to continue after (None when the keystore is
    done), so a large keystore is worked through in bounded chunks. One KMS
    session and one rate limiter serve the whole chunk. Past ``until`` (a
    ``time.monotonic()`` value; a slow AWS) the chunk ends early, at the key it reached.
    """
    summary = ReconcileSummary(keystores=1 if after is None else 0)
    keystore = Keystore.objects.filter(pk=keystore_id, state=KeystoreState.ACTIVE).first()
    if keystore is None:
        return summary, None
    kms = aws.kms_for(keystore)  # an AssumeRole failure fails the chunk: nothing could be checked
    limiter = default_rate_limiter()
    page_size = min(limit, 500) if limit else 500
    seen = 0
    last = after
    while True:
        page = _reconcilable(keystore.pk).order_by("id")
        if last is not None:
            page = page.filter(id__gt=last)
        ids = list(page.values_list("id", flat=True)[:page_size])
        if not ids:
            return summary, None
        for key_id in ids:
            try:
                summary.add(reconcile_key(key_id, actor=actor, kms=kms, limiter=limiter))
            except AwsError as exc:
                summary.add(KeyResult.ERROR)
                logger.warning(
                    "reconciliation could not ask KMS",
                    extra={"key_id": str(key_id), "keystore_id": str(keystore.pk), "aws_code": exc.code},
                )
            if until is not None and time.monotonic() >= until:
                more = _reconcilable(keystore.pk).filter(id__gt=key_id).exists()
                return summary, key_id if more else None
        last, seen = ids[-1], seen + len(ids)
        if limit is not None and seen >= limit:
            more = _reconcilable(keystore.pk).filter(id__gt=last).exists()
            return summary, last if more else None


def recover_interrupted_creations(*, actor: Actor) -> int:
    """Resolve KMS keys left behind by creations that crashed half-way (see ``recover_pending_creations``)."""
    try:
        return services.recover_pending_creations(actor=actor)
    except AwsError as exc:
        logger.warning("could not resolve interrupted key creations", extra={"aws_code": exc.code})
        return 0


# --- KMS keys the portal made but no row owns -------------------------------------------


def _owned_arns(keystore: Keystore) -> set[str]:
    """ARNs of every portal key in the keystore's AWS account and region (any keystore, any state)."""
    return set(
        Key.objects.filter(keystore__aws_account_id=keystore.aws_account_id, keystore__region=keystore.region)
        .exclude(kms_key_arn="")
        .values_list("kms_key_arn", flat=True)
    )


def _still_unowned(arn: str, tagged_id: str) -> bool:
    """Checked again just before acting, journal first: a creation commits its Key row, then drops its journal."""
    if services.creation_in_progress(tagged_id):
        return False  # recover_pending_creations decides once its creator is gone
    return not Key.objects.filter(kms_key_arn=arn).exists()


@dataclass
class SweepResult:
    """What one :func:`sweep_untracked_kms_keys` call did, and the ListKeys marker to go on from (None: done)."""

    resolved: int = 0
    resume_marker: str | None = None


def sweep_untracked_kms_keys(
    keystore_id: Any,
    *,
    actor: Actor,
    kms: KmsSession | None = None,
    limiter: RateLimiter | None = None,
    marker: str | None = None,
    until: float | None = None,
) -> SweepResult:
    """Scan KMS for keys carrying the portal's tag that no portal row owns; schedule each for deletion.

    Such keys come from a CreateKey that AWS executed but whose answer was lost
    (botocore's retry made a second key, which the portal kept), or from any other
    half-finished creation whose journal is gone. Aliases left pointing at them
    are repaired: repointed to the live portal key that owns the alias name, else
    deleted (so the next create with that alias works). Each orphan is one audit event.

    Only unowned ARNs cost a ListResourceTags; the keys the portal owns are known
    from its rows. Works page by page from ``marker``; past ``until`` (a
    ``time.monotonic()`` value) it stops after the current page and returns where
    to resume, so a task never outlives its time budget.
    """
    result = SweepResult()
    keystore = Keystore.objects.filter(pk=keystore_id, state=KeystoreState.ACTIVE).first()
    if keystore is None:
        return result
    kms = kms or aws.kms_for(keystore)
    limiter = limiter or default_rate_limiter()
    owned = _owned_arns(keystore)
    aliases: dict[str, list[str]] | None = None
    while True:
        arns, marker = kms.key_arns_page(marker)
        candidates = _untracked(kms, limiter, [arn for arn in arns if arn not in owned])
        if candidates and aliases is None:
            aliases = {}
            for alias, target in kms.alias_targets():
                aliases.setdefault(target, []).append(alias)
        for arn, tagged_id in candidates:
            if _still_unowned(arn, tagged_id):
                key_aliases = (aliases or {}).get(arn.rsplit("/", 1)[-1], [])
                result.resolved += _remove_orphan(actor, keystore, kms, limiter, arn, tagged_id, key_aliases)
        if marker is None:
            return result
        if until is not None and time.monotonic() >= until:
            result.resume_marker = marker
            return result


def _untracked(kms: KmsSession, limiter: RateLimiter, arns: list[str]) -> list[tuple[str, str]]:
    """``(arn, portal key id)`` of the keys among ``arns`` that carry the portal's tag."""
    found = []
    for arn in arns:
        try:
            tags = limiter.call(kms.tags_of, arn.rsplit("/", 1)[-1])
        except AwsError:
            continue  # AWS-managed or foreign keys the role may not read: not the portal's
        tagged_id = tags.get(settings.BYOK_TAG_KEY, "")
        if services.is_portal_key_id(tagged_id):
            found.append((arn, tagged_id))
    return found


def _remove_orphan(
    actor: Actor,
    keystore: Keystore,
    kms: KmsSession,
    limiter: RateLimiter,
    arn: str,
    tagged_id: str,
    aliases: list[str],
) -> int:
    first_request = len(kms.request_ids)
    repointed, deleted = services.release_stranded_aliases(kms, keystore, aliases)
    info = limiter.call(kms.describe, arn.rsplit("/", 1)[-1])
    scheduled = info.state != KmsState.PENDING_DELETION
    if scheduled:
        services.schedule_orphan_deletion(kms, arn)
    if not (scheduled or repointed or deleted):
        return 0  # already on its way out, nothing pointing at it: nothing to do or say
    with transaction.atomic():
        record(
            actor=actor,
            operation=Operation.RECONCILE,
            outcome=Outcome.SUCCESS,
            keystore=keystore,
            reason="orphan_removed",
            kms_request_ids=kms.request_ids[first_request:],
            details={
                "found_by": "kms_scan",
                "kms_key": arn,
                "tagged_key_id": tagged_id,
                "scheduled_for_deletion": scheduled,
                "aliases_repointed": repointed,
                "aliases_deleted": deleted,
            },
        )
    logger.warning(
        "untracked portal KMS key scheduled for deletion",
        extra={"event": "kms_orphan", "keystore_id": str(keystore.pk), "kms_key": arn, "tagged_key_id": tagged_id},
    )
    return 1


def reconcile_everything(*, actor: Actor) -> ReconcileSummary:
    """Interrupted work and the KMS scan first, then every managed key of every active keystore.

    ``byok_reconcile``, synchronously. Interrupted creations and operations are
    finished or undone, and orphans and their aliases repaired, before keys are
    compared with KMS, so what those repairs change is not reported as drift.
    """
    total = ReconcileSummary()
    recovered = recover_interrupted_creations(actor=actor) + sweep_every_keystore(actor=actor)
    for keystore_id in Keystore.objects.filter(state=KeystoreState.ACTIVE).order_by("id").values_list("id", flat=True):
        try:
            summary, _ = reconcile_keystore(keystore_id, actor=actor)
        except AwsError as exc:
            total.keystores += 1
            total.failed_keystores.append(str(keystore_id))
            logger.warning(
                "reconciliation could not reach the keystore",
                extra={"keystore_id": str(keystore_id), "aws_code": exc.code},
            )
            continue
        total.merge(summary)
    total.orphans_resolved = recovered
    return total


def sweep_every_keystore(*, actor: Actor) -> int:
    """:func:`sweep_untracked_kms_keys` for every active keystore; one unreachable keystore stops none other."""
    resolved = 0
    for keystore_id in Keystore.objects.filter(state=KeystoreState.ACTIVE).order_by("id").values_list("id", flat=True):
        try:
            resolved += sweep_untracked_kms_keys(keystore_id, actor=actor).resolved
        except AwsError as exc:
            logger.warning(
                "could not scan the keystore for untracked KMS keys",
                extra={"keystore_id": str(keystore_id), "aws_code": exc.code},
            )
    return resolved


# --- expiry warnings ----------------------------------------------------------------


def warn_expiring_keys(*, actor: Actor, today: dt.date | None = None, batch_size: int = 500) -> int:
    """Flag keys whose cryptoperiod ends within ``BYOK_EXPIRY_WARNING_DAYS`` (or has ended), once a day each.

    Each warning is an audit event, a structured log line (``event=key_expiry_warning``,
    for alerting) and ``expiry_warned_on`` set to today, which the dashboard shows.
    A conditional UPDATE claims the key for the day before anything is written, so a
    second run the same day (or a redelivered task) warns nobody twice.
    """
    day = today or timezone.localdate()
    horizon = day + dt.timedelta(days=settings.BYOK_EXPIRY_WARNING_DAYS)
    due = (
        Key.objects.filter(state__in=EXPIRY_WARNING_STATES, expires__isnull=False, expires__lte=horizon)
        .exclude(expiry_warned_on=day)
        .select_related("keystore")
        .order_by("id")
    )
    warned = 0
    last: uuid.UUID | None = None
    while True:
        page = due.filter(id__gt=last) if last is not None else due
        batch = list(page[:batch_size])
        if not batch:
            return warned
        for key in batch:
            warned += _warn(actor, key, day)
        last = batch[-1].pk


def _warn(actor: Actor, key: Key, day: dt.date) -> int:
    assert key.expires is not None
    days_left = (key.expires - day).days
    with transaction.atomic():
        claimed = Key.objects.filter(pk=key.pk).exclude(expiry_warned_on=day).update(expiry_warned_on=day)
        if not claimed:
            return 0
        record(
            actor=actor,
            operation=Operation.EXPIRY_WARNING,
            outcome=Outcome.SUCCESS,
            key=key,
            reason="expired" if days_left < 0 else "expires_soon",
            state_before=key.state,
            state_after=key.state,
            details={"expires": key.expires.isoformat(), "days_left": days_left},
        )
    logger.warning(
        "key expired" if days_left < 0 else "key expires soon",
        extra={
            "event": "key_expiry_warning",
            "key_id": str(key.pk),
            "keystore_id": str(key.keystore_id),
            "keystore": key.keystore.name,
            "key_name": key.name,
            "alias": key.alias,
            "expires": key.expires.isoformat(),
            "days_left": days_left,
        },
    )
    return 1
