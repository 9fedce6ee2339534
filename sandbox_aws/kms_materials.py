"""Several key materials per KMS key, as AWS has had them since June 2025 (SPEC §10), for the sandbox.

A symmetric EXTERNAL key holds a list of materials: the first one imported, one per
on-demand rotation (``CURRENT`` and ``NON_CURRENT``, *permanently associated*), and at
most one imported for the next rotation (``PENDING_ROTATION``). Each has an id that
AWS derives from the key id and the material (the formula is not published; the
sandbox's is below and just as opaque to callers), an import state (``IMPORTED`` or
``PENDING_IMPORT`` once deleted or expired), its own expiry and description.

The rule that matters most to callers (Developer Guide, importing-keys-delete-key-
material.html and the ImportKeyMaterial reference): a key works only while **every**
permanently associated material is imported. Deleting or expiring any one of them
sends the key to ``PendingImport``; it is ``Enabled`` again only when all are back.
HMAC and asymmetric keys have exactly one material and no ids on the wire.

Where the API reference leaves the error of a case open, the choice made is noted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from moto.core.exceptions import JsonRESTError
from moto.kms.exceptions import ValidationException

from sandbox_aws.kms_specs import IncorrectKeyMaterialException

CURRENT = "CURRENT"
NON_CURRENT = "NON_CURRENT"
PENDING_ROTATION = "PENDING_ROTATION"
IMPORTED = "IMPORTED"
PENDING_IMPORT = "PENDING_IMPORT"
NEW_KEY_MATERIAL = "NEW_KEY_MATERIAL"
EXISTING_KEY_MATERIAL = "EXISTING_KEY_MATERIAL"
IMPORT_TYPES = (NEW_KEY_MATERIAL, EXISTING_KEY_MATERIAL)
ON_DEMAND = "ON_DEMAND"
# On-demand rotations per key (RotateKeyOnDemand reference); not adjustable.
MAX_ON_DEMAND_ROTATIONS = 25
DESCRIPTION_MAX = 256
_DESCRIPTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:/_.- \t\n\r\f\v")
_ID_CHARS = frozenset("0123456789abcdef")


class LimitExceededException(JsonRESTError):
    """A quota was exceeded (here: the 25 on-demand rotations of a key)."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("LimitExceededException", message)


class ConflictException(JsonRESTError):
    """A rotation of this key is in progress."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("ConflictException", message)


def material_id(key_id: str, digest: bytes) -> str:
    """The KeyMaterialId of the material with SHA-256 ``digest`` in key ``key_id``: 64 lower-case hex.

    Derived from the key id and the material, as AWS does: the same material in another
    key has another id, and re-importing it into the same key gives the same id. Built on
    the digest so that a key remembers the id of material it no longer holds.
    """
    return hmac.new(b"sandbox-kms/key-material-id/v1", key_id.encode() + digest, hashlib.sha256).hexdigest()


@dataclass
class Material:
    """One key material of a KMS key. ``material`` is None while it is not imported (deleted or expired)."""

    material_id: str
    digest: bytes
    material: bytes | None
    state: str
    description: str = ""
    expiration_model: str | None = None
    valid_to: datetime | None = None
    rotation_date: datetime | None = None
    rotation_type: str | None = None

    @property
    def imported(self) -> bool:
        return self.material is not None

    @property
    def permanent(self) -> bool:
        """Permanently associated with the key (everything but a material waiting for its rotation)."""
        return self.state != PENDING_ROTATION

    def drop(self) -> None:
        """Forget the material itself (deletion or expiry); its id, digest and place stay."""
        self.material = None
        self.expiration_model = None
        self.valid_to = None


def check_description(value: object) -> str:
    """KeyMaterialDescription: at most 256 characters of ``[a-zA-Z0-9:/_\\s.-]``."""
    if not isinstance(value, str) or len(value) > DESCRIPTION_MAX or not set(value) <= _DESCRIPTION_CHARS:
        raise ValidationException(
            "1 validation error detected: Value at 'keyMaterialDescription' failed to satisfy constraint: "
            "Member must have length less than or equal to 256 and match pattern ^[a-zA-Z0-9:/_\\s.-]+$"
        )
    return value


def check_material_id(value: object, field: str = "keyMaterialId") -> str:
    """A KeyMaterialId as the API model has it: exactly 64 characters of ``[a-f0-9]``."""
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _ID_CHARS:
        raise ValidationException(
            f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
            "Member must have length 64 and match pattern ^[a-f0-9]+$"
        )
    return value


def check_import_type(value: object) -> str | None:
    if value is None:
        return None
    if value not in IMPORT_TYPES:
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'importType' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{', '.join(IMPORT_TYPES)}]"
        )
    return str(value)


def find(materials: list[Material], wanted_id: str) -> Material | None:
    return next((m for m in materials if m.material_id == wanted_id), None)


def current(materials: list[Material]) -> Material | None:
    return next((m for m in materials if m.state == CURRENT), None)


def pending(materials: list[Material]) -> Material | None:
    return next((m for m in materials if m.state == PENDING_ROTATION), None)


def complete(materials: list[Material]) -> bool:
    """Whether the key can work: it has material, and every permanently associated one is imported."""
    permanent = [m for m in materials if m.permanent]
    return bool(permanent) and all(m.imported for m in permanent)


def on_demand_rotations(materials: list[Material]) -> int:
    return sum(1 for m in materials if m.rotation_type == ON_DEMAND)


def place_import(
    materials: list[Material],
    *,
    key_id: str,
    material: bytes,
    import_type: str | None,
    wanted_id: str | None,
    symmetric: bool,
) -> Material:
    """Where an ImportKeyMaterial of ``material`` goes, creating the entry if it is new material.

    - The first import of a key (NEW, or no ImportType) creates its ``CURRENT`` material.
    - ``EXISTING_KEY_MATERIAL`` (the default once a key had material) re-imports material
      the key already knows; a given ``KeyMaterialId`` must be the id of this material.
    - ``NEW_KEY_MATERIAL`` on a key that has material stages it as ``PENDING_ROTATION``.
      The same material again is accepted (a retry). Material the key already has for
      good, or a second different pending material, is refused: the API reference lists
      no error for these; the sandbox answers ValidationException, and
      KMSInvalidStateException (raised by the caller) for a key missing material.
    """
    digest = hashlib.sha256(material).digest()
    new_id = material_id(key_id, digest)
    if import_type == NEW_KEY_MATERIAL and wanted_id is not None:
        raise ValidationException("KeyMaterialId cannot be specified when ImportType is NEW_KEY_MATERIAL.")
    if not materials:
        if import_type == EXISTING_KEY_MATERIAL:
            raise IncorrectKeyMaterialException("no key material was ever imported into this KMS key")
        entry = Material(new_id, digest, None, CURRENT)
        materials.append(entry)
        return entry
    known = find(materials, new_id)
    if not symmetric or import_type in (None, EXISTING_KEY_MATERIAL):
        if known is None or not hmac.compare_digest(known.digest, digest):
            raise IncorrectKeyMaterialException("the material is not associated with this KMS key")
        if wanted_id is not None and wanted_id != new_id:
            raise IncorrectKeyMaterialException("the key material does not match the given KeyMaterialId")
        return known
    # NEW_KEY_MATERIAL for a rotation.
    if known is not None and known.permanent:
        raise ValidationException(
            f"Key material {new_id} is already associated with this KMS key; import it with "
            "ImportType EXISTING_KEY_MATERIAL."
        )
    waiting = pending(materials)
    if waiting is not None and waiting is not known:
        raise ValidationException(
            f"Key material {waiting.material_id} is already pending rotation; rotate the key or delete that "
            "key material first."
        )
    if known is not None:
        return known
    entry = Material(new_id, digest, None, PENDING_ROTATION)
    materials.append(entry)
    return entry


def rotate(materials: list[Material], now: datetime) -> Material:
    """Make the pending material current (the old current becomes NON_CURRENT); the caller checked the key."""
    waiting = pending(materials)
    if waiting is None or not waiting.imported:
        raise ValidationException(
            "This KMS key has no imported key material in PENDING_ROTATION state; import new key material "
            "(ImportType NEW_KEY_MATERIAL) before rotating it on demand."
        )
    if on_demand_rotations(materials) >= MAX_ON_DEMAND_ROTATIONS:
        raise LimitExceededException(
            f"This KMS key has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations."
        )
    previous = current(materials)
    if previous is not None:
        previous.state = NON_CURRENT
    waiting.state = CURRENT
    waiting.rotation_date = now
    waiting.rotation_type = ON_DEMAND
    return waiting


def rotation_entry(key_id: str, entry: Material, symmetric: bool) -> dict[str, object]:
    """One ListKeyRotations entry (RotationsListEntry)."""
    out: dict[str, object] = {
        "KeyId": key_id,
        "KeyMaterialId": entry.material_id,
        "KeyMaterialState": entry.state,
    }
    if symmetric:  # these four are present only for symmetric EXTERNAL keys
        out["ImportState"] = IMPORTED if entry.imported else PENDING_IMPORT
        if entry.description:
            out["KeyMaterialDescription"] = entry.description
        if entry.expiration_model:
            out["ExpirationModel"] = entry.expiration_model
        if entry.valid_to is not None:
            out["ValidTo"] = entry.valid_to.timestamp()
    if entry.rotation_date is not None:
        out["RotationDate"] = entry.rotation_date.timestamp()
        out["RotationType"] = entry.rotation_type or ON_DEMAND
    return out
