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

import uuid
from dataclasses import dataclass

from django.utils import timezone

from byok_portal.aws import AwsError, KmsSession
from byok_portal.errors import Conflict
from byok_portal.vocabulary import KmsState
from keys import custody
from keys.models import Key, KeyMaterial, MaterialState
from keys.specs import spec_of

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


def _unsealed(key: Key, version: KeyMaterial) -> bytearray:
    if not version.material_sealed:
        raise _not_held(key, version.version)
    return custody.unseal(key.pk, version.material_sealed, version.version)


def _not_held(key: Key, version: int) -> Conflict:
    return Conflict(
        f"The portal holds no material for version {version} of this key.", state=key.state, reason="material_not_held"
    )


def first_import(kms: KmsSession, arn: str, key_id: uuid.UUID, key_spec: str, material: bytes | bytearray) -> str:
    """Import a new KMS key's first material; its KeyMaterialId (empty for HMAC and asymmetric keys).

    For a symmetric key ImportType is sent explicitly (NEW_KEY_MATERIAL), as NOTES.md advises.
    """
    spec = spec_of(key_spec)
    if not spec.versioned:
        return kms.import_material(kms_key_id(arn), material, spec.wrapping_algorithm)
    return kms.import_material(
        kms_key_id(arn),
        material,
        spec.wrapping_algorithm,
        import_type=NEW_KEY_MATERIAL,
        description=description(key_id, 1),
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
    if not versioned(key):
        return _import_single(kms, target, key)
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
                        target, material, spec_of(key.key_spec).wrapping_algorithm, import_type=EXISTING_KEY_MATERIAL
                    )
                else:
                    answered = first_import(kms, arn, key.pk, key.key_spec, material)
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
        if version.version in learned or version.version in imported:
            version.save(update_fields=["kms_key_material_id", "imported_at"])
    return Imported(tuple(imported), learned)


def _import_single(kms: KmsSession, target: str, key: Key) -> Imported:
    """The one material of an HMAC or asymmetric key, again (KMS accepts only the same material)."""
    version = current_version(key)
    if version is None:
        raise _not_held(key, 1)
    material = _unsealed(key, version)
    try:
        kms.import_material(target, material, spec_of(key.key_spec).wrapping_algorithm)
    except AwsError as exc:
        # Already holding (this same) material, e.g. a retried activate: nothing to do.
        tolerate_invalid_state(kms, target, exc, {KmsState.ENABLED, KmsState.DISABLED})
        return Imported((), {})
    finally:
        custody.wipe(material)
    version.imported_at = timezone.now()
    version.save(update_fields=["imported_at"])
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


def seal_version(key: Key, material: bytes | bytearray, *, version: int, state: MaterialState) -> KeyMaterial:
    """A new (unsaved) version row holding ``material`` sealed for exactly this key and version."""
    return KeyMaterial(
        key=key,
        version=version,
        material_sealed=custody.seal(key.pk, material, version),
        kcv=custody.check_values(key.key_spec, material).kcv,
        state=state,
    )
