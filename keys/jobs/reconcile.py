"""Reconciliation with KMS: what each KMS key really is, compared with what the portal says.

Before the keys are compared, interrupted work is finished or undone (the creation
journal) and KMS is scanned for portal-tagged keys no row owns (orphans, and aliases
stranded on them), so what those repairs change is not reported as drift.

Celery tasks (:mod:`keys.tasks`) and ``byok_reconcile`` are thin callers. Idempotent:
reconciliation audits only a *change* of drift, so a repeated run adds nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.identity import Actor
from audit.services import record
from byok_portal import aws
from byok_portal.aws import AwsError, KmsKeyInfo, KmsSession
from byok_portal.errors import ServiceError
from byok_portal.vocabulary import KeyState, KmsState, Operation, Outcome
from keys import custody, materials, services
from keys.lifecycle import expected_kms_state
from keys.models import Key, KeyMaterial, KeyReplica, MaterialState
from keys.operations import REGISTRY
from keys.selectors import (
    creation_in_progress,
    kms_key_owned,
    live_key_for_reconciliation,
    portal_kms_arns,
    reconcilable,
)
from keystores.models import Keystore, KeystoreState

logger = logging.getLogger("byok.jobs")

NOT_FOUND_CODE = "NotFoundException"

T = TypeVar("T")


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
class ReplicaObservation:
    """What KMS says of one replica of a multi-Region key, in its region."""

    kms_state: KmsState
    findings: tuple[Finding, ...]

    @property
    def drift(self) -> list[str]:
        return [finding.message for finding in self.findings]


@dataclass(frozen=True)
class Observation:
    """What KMS says of a key right now, in the portal's terms.

    ``findings`` covers every region (a replica's findings name their region);
    ``replicas`` has each replica's own state and findings, by region.
    """

    kms_state: KmsState
    aws_state: str
    findings: tuple[Finding, ...]
    request_ids: tuple[str, ...]
    replicas: dict[str, ReplicaObservation] = field(default_factory=dict)
    # KeyMaterialIds learned from AWS for versions that had none yet (keys from before versions).
    learned_ids: tuple[tuple[int, str], ...] = ()

    @property
    def drift(self) -> list[str]:
        return [finding.message for finding in self.findings]

    @property
    def codes(self) -> list[str]:
        return [finding.code for finding in self.findings]


MATERIAL_MISSING = "material_missing"
KMS_KEY_GONE = "kms_key_gone"


def _state_findings(key: Key, info: KmsKeyInfo) -> list[Finding]:
    if info.state == expected_kms_state(key.state):
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
        target = limiter.call(kms.describe, key.alias)  # the alias in this session's region
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


PUBLIC_KEY_MISMATCH = "public_key_mismatch"


def _public_key_findings(key: Key, info: KmsKeyInfo, kms: KmsSession, limiter: RateLimiter) -> list[Finding]:
    """An RSA or EC key's public key in KMS must be the portal's (SPEC §9): anything else is another key.

    GetPublicKey needs an enabled key, so it is asked only then.
    """
    if not key.public_key_sha256 or info.state != KmsState.ENABLED:
        return []
    actual = custody.public_key_sha256(limiter.call(kms.public_key, key.kms_key_id))
    if actual == key.public_key_sha256:
        return []
    return [
        Finding(
            PUBLIC_KEY_MISMATCH,
            f"The KMS key's public key (SHA-256 {actual}) is not the portal's ({key.public_key_sha256}): "
            "KMS does not hold this key's material.",
        )
    ]


MATERIAL_VERSIONS_MISSING = "material_versions_missing"
# A material AWS deleted at its ValidTo (SPEC §10: material_valid_days) before the portal imported it again.
MATERIAL_EXPIRED = "material_expired"
MATERIAL_UNKNOWN = "material_unknown"
CURRENT_MATERIAL_DIFFERS = "current_material_differs"


def _short(material_id: str) -> str:
    return material_id[:12] + "…"


def _material_findings(key: Key, info: KmsKeyInfo, kms: KmsSession, limiter: RateLimiter) -> MaterialCheck:
    """A symmetric key's material versions against ``ListKeyRotations(ALL_KEY_MATERIAL)`` and ``CurrentKeyMaterialId``.

    Also learns the KeyMaterialId of a key from before versions: its one version is the
    one material AWS lists for it.
    """
    if (
        not materials.versioned(key)
        or key.state == KeyState.PENDING_DELETION
        or info.state == KmsState.PENDING_DELETION
    ):
        return MaterialCheck([], {})
    listed = limiter.call(kms.key_materials, key.kms_key_id)
    versions = list(KeyMaterial.objects.filter(key=key).order_by("version"))
    held = [v for v in versions if v.state in materials.PERMANENT]
    permanent = [m for m in listed if m.state not in materials.AWS_PENDING_STATES]
    learned: dict[int, str] = {}
    if len(held) == 1 and not held[0].kms_key_material_id and len(permanent) == 1:
        learned[held[0].version] = permanent[0].key_material_id
    ids = {learned.get(v.version, v.kms_key_material_id): v for v in versions}
    by_id = {m.key_material_id: m for m in listed}
    findings: list[Finding] = []
    if key.state in (KeyState.ACTIVE, KeyState.REPLACED):
        missing = [
            v for v in held if (m := by_id.get(learned.get(v.version, v.kms_key_material_id))) and not m.imported
        ]
        expired = _expired(missing)
        findings += _expiry_findings(expired)
        deleted = [v for v in missing if v not in expired]
        # When every version is gone the state finding (PendingImport) says it all; name a partial loss.
        if deleted and len(missing) < len(held):
            names = ", ".join(f"version {v.version} ({_short(v.kms_key_material_id)})" for v in deleted)
            findings.append(
                Finding(
                    MATERIAL_VERSIONS_MISSING,
                    f"Key material {names} is not imported in AWS: the KMS key cannot be used until every one of "
                    "its materials is back. Upload the key's material to repair it.",
                )
            )
    unknown = [m for m in listed if m.key_material_id not in ids]
    if unknown:
        names = ", ".join(f"{_short(m.key_material_id)} ({m.state})" for m in unknown)
        findings.append(
            Finding(
                MATERIAL_UNKNOWN,
                f"The KMS key holds key material the portal does not know: {names}. It was imported or rotated "
                "outside the portal.",
            )
        )
    current = next((v for v in versions if v.state == MaterialState.CURRENT), None)
    current_id = learned.get(current.version, current.kms_key_material_id) if current else ""
    if current_id and info.current_key_material_id and info.current_key_material_id != current_id:
        findings.append(
            Finding(
                CURRENT_MATERIAL_DIFFERS,
                f"AWS encrypts with key material {_short(info.current_key_material_id)}, but the portal's current "
                f"version {current.version if current else '?'} is {_short(current_id)}.",
            )
        )
    return MaterialCheck(findings, learned)


def _expired(versions: list[KeyMaterial]) -> list[KeyMaterial]:
    """Of versions KMS lacks, those whose ValidTo has passed: AWS deleted them itself."""
    now = timezone.now()
    return [v for v in versions if v.valid_to is not None and v.valid_to <= now]


def _expiry_findings(expired: list[KeyMaterial]) -> list[Finding]:
    if not expired:
        return []
    names = ", ".join(f"version {v.version} (ValidTo {v.valid_to:%Y-%m-%d %H:%M} UTC)" for v in expired)
    return [
        Finding(
            MATERIAL_EXPIRED,
            f"Key material {names} expired in AWS before it was imported again, so AWS deleted it: the KMS key "
            "cannot be used until every one of its materials is back. The hourly re-import brings it back (or "
            "upload the key's material now).",
        )
    ]


def _single_material_findings(key: Key, info: KmsKeyInfo) -> list[Finding]:
    """An HMAC or asymmetric key's one material: expired, if KMS lacks it after its ValidTo."""
    if materials.versioned(key) or key.state not in (KeyState.ACTIVE, KeyState.REPLACED):
        return []
    if info.state != KmsState.EMPTY:
        return []
    return _expiry_findings(_expired(materials.held_versions(key)))


@dataclass(frozen=True)
class MaterialCheck:
    """What comparing a key's material versions with AWS found, and the ids it learned."""

    findings: list[Finding]
    learned: dict[int, str]


def _observe_region(
    key: Key, kms: KmsSession, kms_key_arn: str, limiter: RateLimiter
) -> tuple[KmsState, str, list[Finding], KmsKeyInfo | None, dict[int, str]]:
    """One regional KMS key (the primary, or a replica through its region's session) against the portal's view."""
    kms_key_id = kms_key_arn.rsplit("/", 1)[-1]
    no_ids: dict[int, str] = {}
    try:
        info = limiter.call(kms.describe, kms_key_id)
    except AwsError as exc:
        if exc.code != NOT_FOUND_CODE:
            raise
        # A key pending deletion disappears from AWS when its window ends: that is the plan, not drift.
        if key.state == KeyState.PENDING_DELETION:
            return KmsState.UNKNOWN, "", [], None, no_ids
        # Nothing but "Recreate in KMS" can repair this: every other operation needs the KMS key.
        gone = Finding(
            KMS_KEY_GONE,
            f"The KMS key {kms_key_arn} no longer exists in AWS (NotFoundException). Recreate it in KMS with "
            "this key's material.",
        )
        return KmsState.MISSING, "", [gone], None, no_ids
    # Every region holds the same materials (same KeyMaterialIds): each is checked in its own region.
    checked = _material_findings(key, info, kms, limiter)
    findings = (
        _state_findings(key, info)
        + checked.findings
        + _single_material_findings(key, info)
        + _public_key_findings(key, info, kms, limiter)
        + _alias_findings(key, kms, limiter)
        + _tag_findings(key, kms, limiter)
    )
    return info.state, info.aws_state, findings, info, checked.learned


def observe(key: Key, kms: KmsSession, limiter: RateLimiter) -> Observation:
    """DescribeKey, aliases and tags of the key's KMS key, compared with the portal's view; in every region.

    A multi-Region key's replicas are observed in their own regions (SPEC §11): their
    findings say which region is out of step, and AWS's list of replicas is compared
    with the portal's.
    """
    first_request = len(kms.request_ids)
    kms_state, aws_state, findings, info, learned = _observe_region(key, kms, key.kms_key_arn, limiter)
    replicas: dict[str, ReplicaObservation] = {}
    if key.multi_region:
        known = {replica.region: replica for replica in key.replicas.all()}
        for region, replica in sorted(known.items()):
            state, _, regional, _, _ = _observe_region(key, kms.in_region(region), replica.kms_key_arn, limiter)
            regional = [Finding(f.code, f"In {region}: {f.message}") for f in regional]
            replicas[region] = ReplicaObservation(state, tuple(regional))
            findings += regional
        untracked = sorted(set(info.replicas) - set(known)) if info is not None else []
        if untracked and key.state != KeyState.PENDING_DELETION:
            findings.append(
                Finding(
                    REPLICA_UNTRACKED,
                    f"AWS has replicas of this key the portal does not know of, in {', '.join(untracked)} "
                    "(an interrupted add_replica: adding the region again adopts it).",
                )
            )
    return Observation(
        kms_state,
        aws_state,
        tuple(findings),
        tuple(kms.request_ids[first_request:]),
        replicas=replicas,
        learned_ids=tuple(sorted(learned.items())),
    )


REPLICA_UNTRACKED = "replica_untracked"


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
        for version, material_id in observation.learned_ids:
            KeyMaterial.objects.filter(key=key, version=version, kms_key_material_id="").update(
                kms_key_material_id=material_id
            )
        now = timezone.now()
        Key.objects.filter(pk=key.pk).update(kms_state=observation.kms_state, kms_checked_at=now, drift=drift)
        for region, seen_replica in observation.replicas.items():
            KeyReplica.objects.filter(key=key, region=region).update(
                kms_state=seen_replica.kms_state, kms_checked_at=now, drift=seen_replica.drift
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
    key_id: uuid.UUID, *, actor: Actor, kms: KmsSession | None = None, limiter: RateLimiter | None = None
) -> KeyResult:
    """Compare one key with its KMS key, store ``kms_state`` and drift, and repair a lost material if allowed.

    Returns a :class:`KeyResult` value. AWS errors other than "key not found" are
    raised: they say nothing about the key, only that KMS could not be asked.
    """
    key = live_key_for_reconciliation(key_id)
    if key is None or not key.kms_key_arn:
        return KeyResult.SKIPPED
    if KeyMaterial.objects.filter(key=key, state=MaterialState.PENDING_ROTATION).exists():
        # A rotation left half-done: finished or withdrawn first, so what it changed is not reported as drift.
        services.resolve_staged_rotation(actor=actor, key_id=key.pk)
        key = live_key_for_reconciliation(key_id) or key
    kms = kms or aws.kms_for(key.keystore, operation=Operation.RECONCILE, acting=actor)
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
        # The upload operation locks the key, re-imports the same material, clears drift and audits as "upload".
        REGISTRY[Operation.UPLOAD].run(actor, key.pk)
    except (AwsError, ServiceError) as exc:
        logger.warning("automatic re-upload failed", extra={"key_id": str(key.pk), "error": str(exc)})
        return KeyResult.DRIFT
    # Look again: the upload only repairs the material, and other findings (an alias) may remain.
    key.refresh_from_db()
    after = observe(key, kms, limiter)
    _store(actor, key, after, repairing=False)
    return KeyResult.REPAIRED if not after.findings else KeyResult.DRIFT


def reconcile_keystore(
    keystore_id: uuid.UUID,
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
    if after is None:
        # A fresh AssumeRole per run proves the role still works (a cached session may outlive it).
        aws.credential_cache.clear_for(keystore)
    try:
        kms = aws.kms_for(keystore, operation=Operation.RECONCILE, acting=actor)
    except AwsError as exc:
        # Nothing could be checked: say so where people look (the keystore's connection), not "in step".
        _note_connection(actor, keystore, f"{exc.operation}: {exc.code}: {exc.message}")
        raise
    _note_connection(actor, keystore, "")
    limiter = default_rate_limiter()
    page_size = min(limit, 500) if limit else 500
    seen = 0
    last = after
    while True:
        page = reconcilable(keystore.pk).order_by("id")
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
                more = reconcilable(keystore.pk).filter(id__gt=key_id).exists()
                return summary, key_id if more else None
        last, seen = ids[-1], seen + len(ids)
        if limit is not None and seen >= limit:
            more = reconcilable(keystore.pk).filter(id__gt=last).exists()
            return summary, last if more else None


def _note_connection(actor: Actor, keystore: Keystore, error: str) -> None:
    """Record that reconciliation could not reach the keystore, or could again; audit only a change.

    Its connection status is what the keystore list, the keystore page and the
    dashboard show, so a keystore whose role vanished is not taken for one in step.
    """
    unchanged = (
        keystore.last_check_ok is False and keystore.last_check_error == error
        if error
        else keystore.last_check_ok is not False
    )
    if unchanged:
        return
    with transaction.atomic():
        Keystore.objects.filter(pk=keystore.pk).update(
            last_check_at=timezone.now(), last_check_ok=not error, last_check_error=error
        )
        record(
            actor=actor,
            operation=Operation.RECONCILE,
            outcome=Outcome.FAILED if error else Outcome.SUCCESS,
            keystore=keystore,
            reason="connection_failed" if error else "connection_restored",
            error=error,
        )


def recover_interrupted_creations(*, actor: Actor) -> int:
    """Resolve KMS keys left behind by creations that crashed half-way (see ``recover_pending_creations``)."""
    try:
        return services.recover_pending_creations(actor=actor)
    except AwsError as exc:
        logger.warning("could not resolve interrupted key creations", extra={"aws_code": exc.code})
        return 0


# --- KMS keys the portal made but no row owns -------------------------------------------


def _still_unowned(arn: str, tagged_id: str) -> bool:
    """Checked again just before acting, journal first: a creation commits its Key row, then drops its journal."""
    if creation_in_progress(tagged_id):
        return False  # recover_pending_creations decides once its creator is gone
    return not kms_key_owned(arn)


@dataclass
class SweepResult:
    """What one :func:`sweep_untracked_kms_keys` call did, and the ListKeys marker to go on from (None: done)."""

    resolved: int = 0
    resume_marker: str | None = None


def sweep_untracked_kms_keys(
    keystore_id: uuid.UUID,
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
    kms = kms or aws.kms_for(keystore, operation=Operation.RECONCILE, acting=actor)
    limiter = limiter or default_rate_limiter()
    owned = portal_kms_arns(keystore)
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
