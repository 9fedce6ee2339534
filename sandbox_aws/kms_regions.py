"""Multi-Region KMS keys as AWS documents them, for the sandbox's KMS (:mod:`sandbox_aws.kms`).

moto 5.2 gives multi-Region keys an ``mrk-`` id and copies a key into another region on
``ReplicateKey``, sharing one Python object's dictionaries between regions; it has no
transient states, no per-replica import and no deletion rules. Here, as on AWS
(API reference: ReplicateKey, UpdatePrimaryRegion, ScheduleKeyDeletion, DescribeKey;
Developer Guide: multi-region-keys-*.html, key-state.html):

- ``CreateKey(MultiRegion=true)`` makes a primary key whose id is ``mrk-`` and 32 hex digits.
- ``ReplicateKey`` makes a replica in another region of the same partition: the same key id,
  spec, usage and origin, its own ARN, tags, aliases, policy and key state. It is
  ``Creating`` for a moment (:data:`CREATING_SECONDS`), then ``PendingImport`` for imported
  material (``Enabled`` otherwise): a replica of an EXTERNAL key gets no material, and accepts
  only the material of its primary, imported with its own import token. A second replica in
  one region is refused with ``AlreadyExistsException`` (even one pending deletion). Only a
  primary can be replicated, and not while it is pending deletion.
- ``DescribeKey`` reports ``MultiRegionConfiguration`` (PRIMARY/REPLICA, the primary's ARN
  and region, every replica's).
- A primary scheduled for deletion while it has replicas waits in ``PendingReplicaDeletion``
  without a ``DeletionDate`` (``PendingDeletionWindowInDays`` instead) until its last replica
  is deleted; then its waiting period begins (``PendingDeletion``).
- ``UpdatePrimaryRegion`` swaps the primary with the replica in another region.

The per-key facts live in :class:`Replication` (``SandboxKey.replication``); which regions
hold a multi-Region key is read from the account's regional backends, the way AWS keeps
one key per region.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from moto.core.exceptions import JsonRESTError
from moto.kms.exceptions import ValidationException
from moto.kms.models import kms_backends
from moto.kms.responses import KmsResponse
from moto.utilities.utils import get_partition

from sandbox_aws.kms_materials import Material

if TYPE_CHECKING:
    from sandbox_aws.kms import SandboxKey, SandboxKmsBackend

CREATING = "Creating"
PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
PRIMARY = "PRIMARY"
REPLICA = "REPLICA"

# How long a new replica stays in the transient ``Creating`` state. AWS says "a few seconds";
# the sandbox keeps it short so that callers which wait for it (as they must on AWS) wait little.
CREATING_SECONDS = float(os.environ.get("BYOK_SANDBOX_REPLICA_CREATING_SECONDS", "0.2"))


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """moto keeps ``deletion_date`` as naive UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass
class Replication:
    """What one regional key of a multi-Region key knows of the set it belongs to."""

    primary_region: str
    # A new replica is Creating until then.
    creating_until: datetime | None = None
    # A primary waiting in PendingReplicaDeletion: the window its deletion will have.
    pending_window_days: int | None = None
    # On a primary: when its last replica that has gone was deleted (the primary's window starts then).
    replica_deleted_at: datetime | None = None


# --- the set of regional keys -----------------------------------------------------------


def _region_backends(key: SandboxKey) -> dict[str, SandboxKmsBackend]:
    """The KMS backends of ``key``'s account in its partition that exist (moto creates them lazily)."""
    from sandbox_aws.kms import SandboxKmsBackend

    partition = get_partition(key.region)
    return {
        region: backend
        for region, backend in list(kms_backends[key.account_id].items())
        if isinstance(backend, SandboxKmsBackend) and get_partition(region) == partition
    }


def members(key: SandboxKey) -> dict[str, SandboxKey]:
    """Every regional key of ``key``'s multi-Region key (its own included), by region."""
    found = {}
    for region, backend in _region_backends(key).items():
        member = backend.keys.get(key.id)
        if member is not None and member.replication is not None:
            found[region] = member
    return found


def is_primary(key: SandboxKey) -> bool:
    return key.replication is not None and key.replication.primary_region == key.region


def configuration(key: SandboxKey) -> dict[str, Any]:
    """``MultiRegionConfiguration`` as DescribeKey reports it."""
    assert key.replication is not None
    everyone = members(key)
    primary_region = key.replication.primary_region
    primary = everyone.get(primary_region)
    return {
        "MultiRegionKeyType": PRIMARY if key.region == primary_region else REPLICA,
        "PrimaryKey": {"Arn": primary.arn if primary else _arn(key, primary_region), "Region": primary_region},
        "ReplicaKeys": [
            {"Arn": member.arn, "Region": region}
            for region, member in sorted(everyone.items())
            if region != primary_region
        ],
    }


def _arn(key: SandboxKey, region: str) -> str:
    return f"arn:{get_partition(region)}:kms:{region}:{key.account_id}:key/{key.id}"


# --- hooks called by sandbox_aws.kms ----------------------------------------------------


def start(key: SandboxKey) -> None:
    """A new multi-Region primary key: AWS's ``mrk-`` + 32 hex digits id, and its replication record.

    (moto's ``mrk-`` + UUID does not fit the 36 characters its ciphertexts keep for the key id,
    so data it encrypts under such a key never decrypts.)
    """
    key.id = "mrk-" + os.urandom(16).hex()
    key.arn = _arn(key, key.region)
    key.replication = Replication(primary_region=key.region)


def describe(key: SandboxKey, metadata: dict[str, Any]) -> None:
    """Add the multi-Region fields to DescribeKey's ``KeyMetadata``."""
    if key.replication is None:
        metadata["MultiRegion"] = False
        metadata.pop("MultiRegionConfiguration", None)
        return
    metadata["MultiRegion"] = True
    metadata["MultiRegionConfiguration"] = configuration(key)
    if key.key_state == PENDING_REPLICA_DELETION:
        metadata.pop("DeletionDate", None)
        metadata["PendingDeletionWindowInDays"] = key.replication.pending_window_days


def share_materials(key: SandboxKey) -> None:
    """Before an import into a regional key: it learns the materials its set has (not their bytes).

    A multi-Region key has the same materials in every region (same KeyMaterialIds); a
    replica starts with none imported and accepts only those (``EXISTING_KEY_MATERIAL``),
    each through its own import token.
    """
    if key.replication is None:
        return
    known = {material.material_id for material in key.materials}
    for member in members(key).values():
        for material in member.materials:
            if material.material_id not in known:
                key.materials.append(_unimported(material))
                known.add(material.material_id)


def _unimported(material: Material) -> Material:
    return Material(
        material.material_id,
        material.digest,
        None,
        material.state,
        description=material.description,
        rotation_date=material.rotation_date,
        rotation_type=material.rotation_type,
    )


def require_created(key: SandboxKey) -> None:
    """A replica still Creating cannot take material yet: AWS says retry on KMSInvalidStateException."""
    if key.key_state == CREATING:
        raise _error("KMSInvalidStateException", f"{key.arn} is Creating.")


def require_rotatable(key: SandboxKey) -> None:
    """RotateKeyOnDemand of a multi-Region key: on its primary, once every replica holds the new material.

    AWS's rotation of imported material in a multi-Region key: NEW_KEY_MATERIAL into the
    primary, the same material (EXISTING_KEY_MATERIAL) into each replica, then the rotation
    on the primary, which AWS carries to every replica.
    """
    if key.replication is None:
        return
    if not is_primary(key):
        raise _error("UnsupportedOperationException", f"{key.arn} is a replica key; rotate its primary key.")
    waiting = next((m for m in key.materials if m.state == "PENDING_ROTATION"), None)
    if waiting is None:
        return  # the ordinary refusal follows
    for region, member in members(key).items():
        entry = next((m for m in member.materials if m.material_id == waiting.material_id), None)
        if region != key.region and (entry is None or not entry.imported):
            raise _error(
                "KMSInvalidStateException",
                f"The key material {waiting.material_id} is not imported into the replica in {region} yet.",
            )


def after_rotation(primary: SandboxKey) -> None:
    """The primary rotated: every replica's materials take the same states (AWS synchronizes them)."""
    if primary.replication is None:
        return
    states = {m.material_id: m for m in primary.materials}
    for member in members(primary).values():
        if member is primary:
            continue
        for entry in member.materials:
            source = states.get(entry.material_id)
            if source is not None:
                entry.state = source.state
                entry.rotation_date = source.rotation_date
                entry.rotation_type = source.rotation_type
        member.settle()


def schedule_deletion(key: SandboxKey, window: int) -> None:
    """A primary with replicas waits for them in PendingReplicaDeletion, without a deletion date."""
    if not is_primary(key) or len(members(key)) < 2:
        return
    assert key.replication is not None
    key.key_state = PENDING_REPLICA_DELETION
    key.deletion_date = None
    key.replication.pending_window_days = window


def forget(key: SandboxKey) -> None:
    """``key`` is being deleted for good: a primary waiting for its replicas learns when."""
    if key.replication is None or is_primary(key) or key.deletion_date is None:
        return
    primary = members(key).get(key.replication.primary_region)
    if primary is None or primary.replication is None:
        return
    deleted_at = _aware(key.deletion_date)
    previous = primary.replication.replica_deleted_at
    primary.replication.replica_deleted_at = max(previous, deleted_at) if previous else deleted_at


def sweep(backend: SandboxKmsBackend, now: datetime) -> None:
    """Time-driven changes: a new replica stops Creating; a primary whose replicas are all gone starts its window."""
    for key in list(backend.keys.values()):
        replication = key.replication
        if replication is None:
            continue
        if key.key_state == CREATING and replication.creating_until is not None and now >= replication.creating_until:
            replication.creating_until = None
            usable = key.origin != "EXTERNAL" or key.has_material
            key.key_state = "Enabled" if usable else "PendingImport"
            key.enabled = usable
        if key.key_state == PENDING_REPLICA_DELETION:
            _start_primary_window(key, now)


def _start_primary_window(primary: SandboxKey, now: datetime) -> None:
    assert primary.replication is not None
    backends = _region_backends(primary)
    for region, member in members(primary).items():
        due = member.deletion_date is not None and _aware(member.deletion_date) <= now
        if region != primary.region and member.key_state == "PendingDeletion" and due:
            forget(member)
            backends[region].delete_key(member.id)
    if len(members(primary)) > 1:
        return
    started = primary.replication.replica_deleted_at or now
    window = primary.replication.pending_window_days or 30
    primary.key_state = "PendingDeletion"
    primary.deletion_date = _naive(started + timedelta(days=window))
    primary.replication.pending_window_days = None


# --- ReplicateKey and UpdatePrimaryRegion --------------------------------------------------


def _kms_regions_of(partition: str) -> list[str]:
    return boto3.session.Session().get_available_regions("kms", partition_name=partition)


def replicate(
    backend: SandboxKmsBackend,
    key_id: str,
    replica_region: str,
    *,
    description: str,
    policy: str | None,
    tags: list[dict[str, str]],
) -> SandboxKey:
    """ReplicateKey: a replica of a primary key in another region of its partition (see the module docstring)."""
    key = backend.key_for(key_id)
    if key.replication is None:
        raise _error("UnsupportedOperationException", f"{key.arn} is not a multi-Region key.")
    if not is_primary(key):
        raise _error(
            "UnsupportedOperationException",
            f"{key.arn} is a multi-Region replica key; only the primary key can be replicated.",
        )
    partition = get_partition(key.region)
    if replica_region == key.region or replica_region not in _kms_regions_of(partition):
        raise ValidationException(
            f"ReplicaRegion {replica_region!r} must be a Region of the {partition} partition other than the "
            f"primary key's ({key.region})."
        )
    if key.key_state in ("PendingDeletion", PENDING_REPLICA_DELETION):
        raise _error("KMSInvalidStateException", f"{key.arn} is pending deletion.")
    target = kms_backends[key.account_id][replica_region]
    if key.id in target.keys:
        raise _error("AlreadyExistsException", f"{_arn(key, replica_region)} already exists.")
    replica = type(key)(
        policy, key.key_usage, key.key_spec, description, key.account_id, replica_region, True, key.origin
    )
    replica.id = key.id
    replica.arn = _arn(key, replica_region)
    replica.replication = Replication(
        primary_region=key.region, creating_until=_now() + timedelta(seconds=CREATING_SECONDS)
    )
    if key.origin != "EXTERNAL":
        replica.key_material = key.key_material  # KMS's own material is shared; imported material is imported
    replica.materials = [_unimported(material) for material in key.materials]
    replica.key_state = CREATING
    replica.enabled = False
    target.keys[replica.id] = replica
    if tags:
        target.tagger.tag_resource(replica.id, tags)
    return replica


def update_primary_region(backend: SandboxKmsBackend, key_id: str, primary_region: str) -> None:
    """UpdatePrimaryRegion: the replica in ``primary_region`` becomes the primary, the primary a replica."""
    key = backend.key_for(key_id)
    if key.replication is None:
        raise _error("UnsupportedOperationException", f"{key.arn} is not a multi-Region key.")
    if not is_primary(key):
        raise _error("UnsupportedOperationException", f"{key.arn} is not the primary key of its multi-Region key.")
    everyone = members(key)
    if primary_region not in everyone or primary_region == key.region:
        raise _error("NotFoundException", f"{_arn(key, primary_region)} does not exist.")
    for member in everyone.values():
        if member.key_state in ("PendingDeletion", PENDING_REPLICA_DELETION, CREATING):
            raise _error("KMSInvalidStateException", f"{member.arn} is {member.key_state}.")
    for member in everyone.values():
        assert member.replication is not None
        member.replication.primary_region = primary_region


# --- the state file ------------------------------------------------------------------------


def snapshot(key: SandboxKey) -> dict[str, Any] | None:
    replication = key.replication
    if replication is None:
        return None
    return {
        "primary_region": replication.primary_region,
        "creating_until": replication.creating_until.isoformat() if replication.creating_until else None,
        "pending_window_days": replication.pending_window_days,
        "replica_deleted_at": replication.replica_deleted_at.isoformat() if replication.replica_deleted_at else None,
    }


def restore(key: SandboxKey, data: dict[str, Any] | None) -> None:
    if data is None:
        key.replication = Replication(primary_region=key.region) if key.multi_region else None
        return
    key.replication = Replication(
        primary_region=data["primary_region"],
        creating_until=datetime.fromisoformat(data["creating_until"]) if data.get("creating_until") else None,
        pending_window_days=data.get("pending_window_days"),
        replica_deleted_at=(
            datetime.fromisoformat(data["replica_deleted_at"]) if data.get("replica_deleted_at") else None
        ),
    )


# --- HTTP actions added to moto's KmsResponse -----------------------------------------------


def _params(response: KmsResponse) -> dict[str, Any]:
    params = json.loads(response.body or "{}")
    if not isinstance(params, dict):
        raise ValidationException("The request body must be a JSON object.")
    return params


def replicate_key(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_ReplicateKey.html"""
    from sandbox_aws.kms import _backend

    params = _params(self)
    backend = _backend(self)
    tags = [{"TagKey": str(t.get("TagKey")), "TagValue": str(t.get("TagValue", ""))} for t in params.get("Tags") or []]
    replica = replicate(
        backend,
        str(params.get("KeyId", "")),
        str(params.get("ReplicaRegion", "")),
        description=str(params.get("Description", "")),
        policy=params.get("Policy"),
        tags=tags,
    )
    return json.dumps(
        {
            "ReplicaKeyMetadata": replica.to_dict()["KeyMetadata"],
            "ReplicaPolicy": replica.policy,
            "ReplicaTags": tags,
        }
    )


def update_primary_region_action(self: KmsResponse) -> str:
    """https://docs.aws.amazon.com/kms/latest/APIReference/API_UpdatePrimaryRegion.html"""
    from sandbox_aws.kms import _backend

    params = _params(self)
    update_primary_region(_backend(self), str(params.get("KeyId", "")), str(params.get("PrimaryRegion", "")))
    return "{}"


MULTI_REGION_KEY_ID = re.compile(r"^mrk-[0-9a-f]{32}$")
_MOTO_VALIDATE_CMK_ID = KmsResponse._validate_cmk_id


def _validate_cmk_id(self: KmsResponse, key_id: str) -> None:
    """moto's key id check, which knows only ``mrk-`` + UUID, taught AWS's ``mrk-`` + 32 hex digits."""
    if MULTI_REGION_KEY_ID.match(key_id):
        if key_id not in self.kms_backend.keys:
            raise JsonRESTError("NotFoundException", f"Key '{self._display_arn(key_id)}' does not exist")
        return
    _MOTO_VALIDATE_CMK_ID(self, key_id)


ACTIONS = {
    "replicate_key": replicate_key,
    "update_primary_region": update_primary_region_action,
    "_validate_cmk_id": _validate_cmk_id,
}
