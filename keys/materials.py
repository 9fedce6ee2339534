"""A key's material versions in KMS (SPEC §10): import and delete them, per KMS key target.

AWS lets a symmetric EXTERNAL key hold several materials and needs *every*
permanently associated one imported before the key works. The portal keeps each
version sealed (:class:`keys.models.KeyMaterial`); these functions bring one KMS key
(a *target*: one region's client and that region's key ARN) in line with them, so a
multi-region key calls the same functions once per region.

Each function is safe to run again after a failure half-way: it asks KMS which
materials are already there (``ListKeyRotations(IncludeKeyMaterial=ALL_KEY_MATERIAL)``)
and only does what is missing. HMAC and asymmetric keys have one material and AWS
rejects ``ImportType``/``KeyMaterialId``/``KeyMaterialDescription`` for them, so none
is sent (SPEC §9).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

from django.utils import timezone

from byok_portal.aws import AwsError, KmsMaterialInfo, KmsSession
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KmsState
from keys import custody
from keys.models import Key, KeyMaterial, MaterialState
from keys.rotation_policy import next_rotation_date
from keys.specs import spec_of
from keystores.models import MAX_MATERIAL_VALID_DAYS

INVALID_STATE_CODE = "KMSInvalidStateException"
NEW_KEY_MATERIAL = "NEW_KEY_MATERIAL"
EXISTING_KEY_MATERIAL = "EXISTING_KEY_MATERIAL"
# AWS's KeyMaterialState of material imported for a rotation that has not happened yet.
AWS_PENDING_STATES = ("PENDING_ROTATION", "PENDING_MULTI_REGION_IMPORT_AND_ROTATION")
PERMANENT = (MaterialState.CURRENT, MaterialState.NON_CURRENT)


def tolerate_invalid_state(kms: KmsSession, kms_key_id: str, exc: AwsError, done: set[KmsState]) -> None:
    """A step refused with KMSInvalidStateException may simply have happened already (a retry)."""
    if exc.code != INVALID_STATE_CODE:
        raise exc
    if kms.describe(kms_key_id).state not in done:
        raise exc


def kms_key_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def description(key_id: uuid.UUID, version: int) -> str:
    """KeyMaterialDescription of a version: visible in AWS, so it names the portal key and version, nothing secret."""
    return f"byok-portal key {key_id} version {version}"


def versioned(key: Key) -> bool:
    return spec_of(key.key_spec).versioned


def held_versions(key: Key) -> list[KeyMaterial]:
    """The versions KMS must hold for the key to work (CURRENT and NON_CURRENT), oldest first."""
    return list(KeyMaterial.objects.filter(key=key, state__in=PERMANENT).order_by("version"))


def current_version(key: Key) -> KeyMaterial | None:
    return KeyMaterial.objects.filter(key=key, state=MaterialState.CURRENT).first()


def _unsealed(key: Key, version: KeyMaterial) -> custody.Material:
    if not version.material_sealed:
        raise _not_held(key, version.version)
    return custody.unseal(key.pk, version.material_sealed, version.version)


def _not_held(key: Key, version: int) -> Conflict:
    return Conflict(
        f"The portal holds no material for version {version} of this key.", state=key.state, reason="material_not_held"
    )


# --- material expiry (SPEC §10: ``material_valid_days``) -----------------------------------

# AWS refuses a ValidTo more than 365 days ahead (ImportKeyMaterial reference). A 365-day policy imports
# with this much less, so that a portal clock a little ahead of AWS's is not refused.
_CLOCK_SKEW = dt.timedelta(minutes=5)


def expiry_for(valid_days: int | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """The ValidTo of material imported now under a policy of ``valid_days`` (None: it does not expire)."""
    if valid_days is None:
        return None
    moment = now or timezone.now()
    return min(
        moment + dt.timedelta(days=valid_days), moment + dt.timedelta(days=MAX_MATERIAL_VALID_DAYS) - _CLOCK_SKEW
    )


def note_expiry(key: Key, version: KeyMaterial, valid_to: dt.datetime | None) -> None:
    """Write down the ValidTo a version was just imported with somewhere (the caller saves the version).

    A multi-Region key's material expires per region: after an import into some of its regions
    only, the earliest expiry still standing is kept, so the re-import comes in time for every
    region. (The re-import task imports into every region and writes its new ValidTo directly.)
    """
    standing = version.valid_to
    if (
        key.multi_region
        and standing is not None
        and standing > timezone.now()
        and (valid_to is None or standing < valid_to)
    ):
        return
    version.valid_to = valid_to


def forget_expiries(key: Key) -> None:
    """KMS holds none of the key's material any more (deactivate, cancel deletion): nothing of it expires."""
    KeyMaterial.objects.filter(key=key, valid_to__isnull=False).update(valid_to=None)


def first_import(
    kms: KmsSession,
    arn: str,
    key_id: uuid.UUID,
    key_spec: str,
    material: bytes | custody.Material,
    *,
    valid_to: dt.datetime | None = None,
) -> str:
    """Import a new KMS key's first material; its KeyMaterialId (empty for HMAC and asymmetric keys).

    For a symmetric key ImportType is sent explicitly (NEW_KEY_MATERIAL), as NOTES.md advises.
    """
    spec = spec_of(key_spec)
    if not spec.versioned:
        return kms.import_material(kms_key_id(arn), material, spec.wrapping_algorithm, valid_to=valid_to)
    return kms.import_material(
        kms_key_id(arn),
        material,
        spec.wrapping_algorithm,
        import_type=NEW_KEY_MATERIAL,
        description=description(key_id, 1),
        valid_to=valid_to,
    )


@dataclass(frozen=True)
class Imported:
    """What :func:`import_missing_materials` did: the versions it imported, and ids AWS told it."""

    versions: tuple[int, ...]
    learned_ids: dict[int, str]


def import_missing_materials(kms: KmsSession, arn: str, key: Key) -> Imported:
    """Import every permanently associated version the KMS key lacks (activate, upload, recreate).

    Symmetric keys: ``EXISTING_KEY_MATERIAL`` with the version's KeyMaterialId (KMS checks
    it). A version whose id the portal has not learned yet (keys from before versions)
    is imported without one, and AWS's answer teaches it. A KMS key that never had
    material (a recreated one) gets the current version as its first material. The ids
    learned are saved on the versions (the caller holds the key's row lock).
    """
    target = kms_key_id(arn)
    valid_to = expiry_for(key.material_valid_days)
    if not versioned(key):
        return _import_single(kms, target, key, valid_to)
    listed = {m.key_material_id: m for m in kms.key_materials(target)}
    versions = held_versions(key)
    imported: list[int] = []
    learned: dict[int, str] = {}
    if not any(v.kms_key_material_id in listed for v in versions if v.kms_key_material_id):
        # Not a KMS key that held these materials (or ids not learned yet): the current version goes in,
        # as the first material of a KMS key that never had one, else as material it already knows.
        version = current_version(key)
        if version is None:
            raise _not_held(key, 1)
        if not (listed and version.kms_key_material_id == "" and all(m.imported for m in listed.values())):
            material = _unsealed(key, version)
            try:
                if listed:
                    answered = kms.import_material(
                        target,
                        material,
                        spec_of(key.key_spec).wrapping_algorithm,
                        import_type=EXISTING_KEY_MATERIAL,
                        valid_to=valid_to,
                    )
                else:
                    answered = first_import(kms, arn, key.pk, key.key_spec, material, valid_to=valid_to)
            finally:
                custody.wipe(material)
            imported.append(version.version)
            learned[version.version] = answered
        versions = [version]
    else:
        for version in versions:
            info = listed.get(version.kms_key_material_id) if version.kms_key_material_id else None
            if info is not None and info.imported:
                continue
            if version.kms_key_material_id and info is None:
                continue  # a material of an earlier KMS key of this portal key (recreated): not this one's
            material = _unsealed(key, version)
            try:
                answered = kms.import_material(
                    target,
                    material,
                    spec_of(key.key_spec).wrapping_algorithm,
                    import_type=EXISTING_KEY_MATERIAL,
                    key_material_id=version.kms_key_material_id,
                    valid_to=valid_to,
                )
            finally:
                custody.wipe(material)
            imported.append(version.version)
            if answered and answered != version.kms_key_material_id:
                learned[version.version] = answered
    now = timezone.now()
    for version in versions:
        if version.version in learned:
            version.kms_key_material_id = learned[version.version]
        if version.version in imported:
            version.imported_at = now
            note_expiry(key, version, valid_to)
        if version.version in learned or version.version in imported:
            version.save(update_fields=["kms_key_material_id", "imported_at", "valid_to"])
    return Imported(tuple(imported), learned)


def _import_single(kms: KmsSession, target: str, key: Key, valid_to: dt.datetime | None) -> Imported:
    """The one material of an HMAC or asymmetric key, again (KMS accepts only the same material)."""
    version = current_version(key)
    if version is None:
        raise _not_held(key, 1)
    material = _unsealed(key, version)
    try:
        kms.import_material(target, material, spec_of(key.key_spec).wrapping_algorithm, valid_to=valid_to)
    except AwsError as exc:
        # Already holding (this same) material, e.g. a retried activate: nothing to do.
        tolerate_invalid_state(kms, target, exc, {KmsState.ENABLED, KmsState.DISABLED})
        return Imported((), {})
    finally:
        custody.wipe(material)
    version.imported_at = timezone.now()
    note_expiry(key, version, valid_to)
    version.save(update_fields=["imported_at", "valid_to"])
    return Imported((version.version,), {})


def delete_all_materials(kms: KmsSession, arn: str, key: Key) -> list[str]:
    """Delete every material the KMS key holds, so it holds nothing (deactivate, cancel deletion).

    Each ``DeleteImportedKeyMaterial`` names its KeyMaterialId; material waiting for a
    rotation goes too (it would otherwise be left behind in AWS). Returns the ids deleted.
    """
    target = kms_key_id(arn)
    if not versioned(key):
        kms.delete_material(target)  # no effect on a key without material (key-state table)
        return []
    deleted: list[str] = []
    for info in kms.key_materials(target):
        if info.imported:
            kms.delete_material(target, info.key_material_id)
            deleted.append(info.key_material_id)
    return deleted


def seal_version(key: Key, material: bytes | custody.Material, *, version: int, state: MaterialState) -> KeyMaterial:
    """A new (unsaved) version row holding ``material`` sealed for exactly this key and version."""
    return KeyMaterial(
        key=key,
        version=version,
        material_sealed=custody.seal(key.pk, material, version),
        kcv=custody.check_values(key.key_spec, material).kcv,
        state=state,
    )


# --- rotation (SPEC §10) ----------------------------------------------------------------

# On-demand rotations AWS allows per key; not adjustable (RotateKeyOnDemand reference).
ROTATION_LIMIT = 25
INCORRECT_MATERIAL_CODE = "IncorrectKeyMaterialException"
LIMIT_EXCEEDED_CODE = "LimitExceededException"


def rotations(key: Key) -> int:
    """How many times the key was rotated on demand: its versions after the first that were rotated to."""
    return KeyMaterial.objects.filter(key=key, rotated_at__isnull=False).count()


def staged_version(key: Key) -> KeyMaterial | None:
    return KeyMaterial.objects.filter(key=key, state=MaterialState.PENDING_ROTATION).first()


def _find(listed: list[KmsMaterialInfo], material_id: str) -> KmsMaterialInfo | None:
    return next((m for m in listed if material_id and m.key_material_id == material_id), None)


def _learn_staged_id(
    kms: KmsSession, target: str, key: Key, staged: KeyMaterial, listed: list[KmsMaterialInfo]
) -> None:
    """Find out whether AWS already holds the staged material although its id never reached the database.

    That happens when an attempt imported it (or even rotated to it) and then failed before its
    commit. Re-importing it as EXISTING_KEY_MATERIAL without an id settles it: AWS accepts only
    material associated with the key (and answers its id), else IncorrectKeyMaterialException.
    """
    known = set(KeyMaterial.objects.filter(key=key).exclude(pk=staged.pk).values_list("kms_key_material_id", flat=True))
    if staged.kms_key_material_id or not any(m.key_material_id not in known for m in listed):
        return
    material = _unsealed(key, staged)
    valid_to = expiry_for(key.material_valid_days)
    try:
        staged.kms_key_material_id = kms.import_material(
            target,
            material,
            spec_of(key.key_spec).wrapping_algorithm,
            import_type=EXISTING_KEY_MATERIAL,
            valid_to=valid_to,
        )
        note_expiry(key, staged, valid_to)
    except AwsError as exc:
        if exc.code != INCORRECT_MATERIAL_CODE:
            raise
    finally:
        custody.wipe(material)


def stage_material(kms: KmsSession, arn: str, key: Key, staged: KeyMaterial) -> bool:
    """Make the staged version's material PENDING_ROTATION in the KMS key (or find it there already).

    True if AWS already made it current (nothing left to rotate).

    ``ImportKeyMaterial(ImportType=NEW_KEY_MATERIAL)``. AWS keeps one material pending per key:
    one left by an earlier attempt whose answer was lost (so the portal never learned its id)
    is deleted first. A material AWS already made current (a rotation whose commit was lost)
    is left as it is. The id is set on ``staged`` (the caller saves it).
    """
    target = kms_key_id(arn)
    listed = kms.key_materials(target)
    _learn_staged_id(kms, target, key, staged, listed)
    mine = _find(listed, staged.kms_key_material_id)
    if mine is not None and mine.imported and (mine.state == "CURRENT" or mine.state in AWS_PENDING_STATES):
        return mine.state == "CURRENT"
    for other in listed:
        if other.state in AWS_PENDING_STATES and other.key_material_id != staged.kms_key_material_id:
            kms.delete_material(target, other.key_material_id)
    material = _unsealed(key, staged)
    valid_to = expiry_for(key.material_valid_days)
    try:
        staged.kms_key_material_id = kms.import_material(
            target,
            material,
            spec_of(key.key_spec).wrapping_algorithm,
            import_type=NEW_KEY_MATERIAL,
            description=description(key.pk, staged.version),
            valid_to=valid_to,
        )
    finally:
        custody.wipe(material)
    staged.imported_at = timezone.now()
    note_expiry(key, staged, valid_to)
    return False


class RotationLimitReached(Conflict):
    """AWS's 25 on-demand rotations of a key are used up (409 ``rotation_limit``)."""

    code = "rotation_limit"

    def __init__(self, key: Key) -> None:
        super().__init__(
            f"This key was rotated {ROTATION_LIMIT} times, the most AWS allows for a KMS key. Renew it instead: "
            "renewal creates a new key (and KMS key) with fresh material and moves the alias to it.",
            state=key.state,
            limit=ROTATION_LIMIT,
        )


class RotationInProgress(Conflict):
    """AWS accepted the rotation but has not finished it yet (it rotates in the background)."""

    code = "rotation_in_progress"


def rotate_to(
    kms: KmsSession, arn: str, key: Key, staged: KeyMaterial, *, already_current: bool, wait_seconds: float
) -> None:
    """``RotateKeyOnDemand`` to the staged material, then confirm AWS made it current.

    Confirmed when ``ListKeyRotations(ALL_KEY_MATERIAL)`` lists it ``CURRENT`` and
    ``DescribeKey.CurrentKeyMaterialId`` names it. A rotation AWS already did (an earlier
    attempt whose answer was lost) is not asked for again. AWS rotates in the background:
    the confirmation is awaited up to ``wait_seconds``, then :class:`RotationInProgress`
    (the retry, or reconciliation, finishes it).
    """
    target = kms_key_id(arn)
    if not already_current:
        try:
            kms.rotate_on_demand(target)
        except AwsError as exc:
            if exc.code == LIMIT_EXCEEDED_CODE:
                raise RotationLimitReached(key) from exc
            # A retried call whose first attempt AWS did carry out is refused (nothing pending any more).
            mine = _find(kms.key_materials(target), staged.kms_key_material_id)
            if mine is None or mine.state != "CURRENT":
                raise
    deadline = time.monotonic() + wait_seconds
    while True:
        mine = _find(kms.key_materials(target), staged.kms_key_material_id)
        if (
            mine is not None
            and mine.state == "CURRENT"
            and kms.describe(target).current_key_material_id == (staged.kms_key_material_id)
        ):
            return
        if time.monotonic() >= deadline:
            raise RotationInProgress(
                "AWS accepted the rotation but has not finished it yet; the portal completes it on the next try "
                "or reconciliation.",
                state=key.state,
                reason="rotation_in_progress",
            )
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def finish_rotation(key: Key, staged: KeyMaterial, rotated_at: dt.datetime) -> None:
    """The portal's side of a confirmed rotation: the staged version is current, the old one non-current."""
    KeyMaterial.objects.filter(key=key, state=MaterialState.CURRENT).update(state=MaterialState.NON_CURRENT)
    staged.state = MaterialState.CURRENT
    staged.rotated_at = rotated_at
    staged.save()
    key.kcv = staged.kcv
    key.material_version = staged.version
    key.rotations = rotations(key)
    key.rotated_at = rotated_at
    key.next_rotation_date = next_rotation_date(key)


def current_in_aws(kms: KmsSession, arn: str, key: Key, staged: KeyMaterial) -> KmsMaterialInfo | None:
    """The staged material's AWS entry if AWS made it current (the rotation happened), else None.

    Its id is learned first if the attempt that imported it never committed it.
    """
    target = kms_key_id(arn)
    listed = kms.key_materials(target)
    _learn_staged_id(kms, target, key, staged, listed)
    mine = _find(listed, staged.kms_key_material_id)
    return mine if mine is not None and mine.state == "CURRENT" else None


def withdraw_staged(kms: KmsSession, arn: str, key: Key, staged: KeyMaterial) -> None:
    """Abandon a staged rotation: its material leaves the KMS key (if there), then the portal forgets it.

    Only for material AWS has not made current: the caller checked (:func:`current_in_aws`).
    """
    target = kms_key_id(arn)
    listed = kms.key_materials(target)
    _learn_staged_id(kms, target, key, staged, listed)
    mine = _find(listed, staged.kms_key_material_id)
    if mine is not None and mine.state == "CURRENT":
        raise Conflict("The staged material is current in AWS: finish the rotation instead.", state=key.state)
    if mine is not None:
        kms.delete_material(target, staged.kms_key_material_id)
    staged.delete()


# --- re-import before expiry (SPEC §10) --------------------------------------------------


def reimport_all(
    kms: KmsSession, arn: str, key: Key, versions: list[KeyMaterial], valid_to: dt.datetime | None
) -> None:
    """Import every version in ``versions`` into one KMS key again, with a new expiry (``valid_to``).

    AWS accepts the same material again and takes its new ExpirationModel and ValidTo; a
    material that expired or was deleted meanwhile comes back (the key is Enabled again once
    every one is there). Symmetric keys name each version: ``EXISTING_KEY_MATERIAL`` with its
    KeyMaterialId (a version whose id was never learned is imported without one, and AWS's answer
    teaches it). HMAC and asymmetric keys have their one material, sent without ImportType.
    Retrying after a failure half-way imports them all again: harmless, each import only sets
    the expiry again. The ids learned are set on the versions (the caller saves them).
    """
    target = kms_key_id(arn)
    algorithm = spec_of(key.key_spec).wrapping_algorithm
    for version in versions:
        material = _unsealed(key, version)
        try:
            if not versioned(key):
                kms.import_material(target, material, algorithm, valid_to=valid_to)
                continue
            answered = kms.import_material(
                target,
                material,
                algorithm,
                import_type=EXISTING_KEY_MATERIAL,
                key_material_id=version.kms_key_material_id,
                valid_to=valid_to,
            )
        finally:
            custody.wipe(material)
        if answered and not version.kms_key_material_id:
            version.kms_key_material_id = answered
