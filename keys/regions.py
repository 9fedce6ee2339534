"""Multi-Region keys (SPEC §11): each KMS step of an operation, once per region, with a truthful record of each.

A multi-Region key is one portal key whose KMS key (the primary, in the keystore's
region, on :class:`~keys.models.Key`) has replicas in other regions
(:class:`~keys.models.KeyReplica`), all with the same key id and the same material.
AWS keeps state, tags and aliases per region, so every operation repeats its KMS step
in every region: :func:`each_region` is the one loop that does, for single-Region keys
too (one region). When a region fails half-way, the regions already done are known:
:class:`RegionFailed` carries them, and :func:`note_failure` writes them down after
the operation's transaction rolled back, so the key page shows which region is out of
step and a retry (each step idempotent) converges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
from django.core.exceptions import ValidationError
from django.utils import timezone

from byok_portal.aws import AwsError, KmsSession
from byok_portal.vocabulary import KmsState
from keys.models import Key, KeyReplica
from keystores.models import Keystore

NOT_FOUND_CODE = "NotFoundException"


@dataclass
class Region:
    """One regional KMS key of a portal key: the primary (``replica`` None) or one replica."""

    name: str
    kms: KmsSession
    kms_key_arn: str
    replica: KeyReplica | None = None

    @property
    def kms_key_id(self) -> str:
        return self.kms_key_arn.rsplit("/", 1)[-1]

    @property
    def is_primary(self) -> bool:
        return self.replica is None


class RegionFailed(AwsError):
    """An AWS failure in one region of an operation, with what the regions before it reached.

    Still an :class:`AwsError` (the doors answer 502 with AWS's code and message);
    ``reached`` maps each region already done to the KMS state it was left in.
    """

    def __init__(self, cause: AwsError, region: str, reached: Mapping[str, KmsState | None]) -> None:
        super().__init__(
            kind=cause.kind,
            operation=cause.operation,
            code=cause.code,
            message=cause.message,
            request_id=cause.request_id,
            region=region,
        )
        self.reached = dict(reached)


def regions_of(key: Key, kms: KmsSession, *, replicas_first: bool = False) -> list[Region]:
    """The key's regional KMS keys: the primary, then its replicas by region (or the replicas first)."""
    primary = Region(key.keystore.region, kms, key.kms_key_arn)
    replicas = [
        Region(replica.region, kms.in_region(replica.region), replica.kms_key_arn, replica)
        for replica in _replicas(key)
    ]
    return [*replicas, primary] if replicas_first else [primary, *replicas]


def _replicas(key: Key) -> list[KeyReplica]:
    if not key.multi_region:
        return []
    return sorted(key.replicas.all(), key=lambda replica: replica.region)


def each_region(
    key: Key,
    kms: KmsSession,
    step: Callable[[Region], KmsState | None],
    *,
    replicas_first: bool = False,
) -> dict[str, KmsState | None]:
    """Run ``step`` in every region of ``key`` in order; record the KMS state each returns (None: unchanged).

    The primary's state goes to ``key.kms_state`` (the caller saves the key), each replica's
    to its row (saved here, in the caller's transaction). A failure is re-raised as
    :class:`RegionFailed`, naming the regions done before it.
    """
    reached: dict[str, KmsState | None] = {}
    for region in regions_of(key, kms, replicas_first=replicas_first):
        try:
            state = step(region)
        except RegionFailed:
            raise
        except AwsError as exc:
            raise RegionFailed(exc, region.name, reached) from exc
        reached[region.name] = state
        if state is None:
            continue
        if region.replica is None:
            key.kms_state = state
        else:
            region.replica.kms_state = state
            region.replica.save(update_fields=["kms_state", "drift", "deletion_date"])
    return reached


def note_failure(key: Key, exc: AwsError) -> dict[str, Any] | None:
    """After a failed operation rolled back: write down what each region reached, and that the failed one is unknown.

    Returns the audit details that say so (None for a single-Region key, whose
    failure the caller records as before).
    """
    if not key.multi_region or not isinstance(exc, RegionFailed):
        return None
    failed_state = KmsState.MISSING if exc.code == NOT_FOUND_CODE else KmsState.UNKNOWN
    states = {**exc.reached, exc.region: failed_state}
    home = key.keystore.region
    primary_state = states.get(home)
    if primary_state is not None:
        key.kms_state = primary_state
    for replica in key.replicas.all():
        state = states.get(replica.region)
        if state is not None:
            replica.kms_state = state
            replica.save(update_fields=["kms_state"])
    return {"failed_region": exc.region, "regions_done": sorted(exc.reached)}


def set_replica_rows(key: Key, arns: Mapping[str, str], kms_state: KmsState) -> None:
    """Create the rows of a new key's replicas (create, renew, add_replica)."""
    now = timezone.now()
    for region, arn in arns.items():
        KeyReplica.objects.update_or_create(
            key=key, region=region, defaults={"kms_key_arn": arn, "kms_state": kms_state, "kms_checked_at": now}
        )


# --- which regions a replica may go to ----------------------------------------------------


@cache
def _partition_regions() -> dict[str, frozenset[str]]:
    session = botocore.session.get_session()
    return {
        partition: frozenset(session.get_available_regions("kms", partition_name=partition))
        for partition in session.get_available_partitions()
    }


def partition_of(region: str) -> str:
    for partition, regions in _partition_regions().items():
        if region in regions:
            return partition
    return ""


def replica_regions_for(keystore: Keystore) -> list[str]:
    """The regions a replica of a key in ``keystore`` may go to: its partition's other KMS regions."""
    partition = partition_of(keystore.region)
    return sorted(_partition_regions().get(partition, frozenset()) - {keystore.region})


def validate_replica_regions(
    keystore: Keystore, regions: Iterable[str], *, field: str, existing: Iterable[str] = ()
) -> list[str]:
    """``regions`` if each is a KMS region of the keystore's partition, not its own, named once and not yet used.

    Raises ValidationError on ``field`` (400 with the field) otherwise.
    """
    allowed = set(replica_regions_for(keystore))
    taken = set(existing)
    chosen: list[str] = []
    for region in regions:
        if region == keystore.region:
            raise ValidationError(
                {field: f"{region} is the keystore's own region, where the primary key is; choose other regions."}
            )
        if region not in allowed:
            raise ValidationError(
                {
                    field: f"{region!r} is not a KMS region of the keystore's partition "
                    f"({partition_of(keystore.region) or 'unknown'}): a multi-Region key's replicas stay in it."
                }
            )
        if region in chosen:
            raise ValidationError({field: f"{region} is named twice."})
        if region in taken:
            raise ValidationError({field: f"The key already has a replica in {region}."})
        chosen.append(region)
    return chosen
