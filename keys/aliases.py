"""Who holds an alias, and the lock under which one is claimed: aliases are per AWS account *and region*.

AWS keeps an alias name unique per account and region, and a multi-Region key (SPEC §11)
holds its alias in its home region and in each replica's region. Two keystores of one
account may have different home regions, so a key's replica can live in another
keystore's home region: the question "is this alias free here?" is about every portal
key of the account in that region, whichever keystore it belongs to. :func:`holder`
answers it, once, for every operation that creates or moves an alias (create, update,
add replica, renew, recreate) and for the code that decides whether an alias found in
AWS is the portal's to take over.

The database can only enforce an alias per keystore (``keys_unique_live_alias``); a
check in Python alone would let two requests pass it at the same moment. So an alias is
claimed under a PostgreSQL advisory lock per (account, region, alias), taken before the
check and held until the claiming key's row is committed (:func:`reserved` for a create,
which works outside a transaction; :func:`reserve` inside an operation's transaction).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection
from django.db.models import Q

from byok_portal.errors import Conflict
from byok_portal.vocabulary import KeyState
from keys.models import Key, KeyReplica
from keystores.models import Keystore

logger = logging.getLogger("byok.keys")

# The first half of each alias lock's two-integer key. PostgreSQL keeps two-integer advisory
# locks apart from one-bigint ones, so these never meet the creation leases (keys.services).
_LOCK_SPACE = int.from_bytes(b"alia", "big", signed=True)


class AliasTaken(Conflict):
    """Another live portal key of the same AWS account already holds the alias in that region (409 ``alias_taken``).

    The other key is not named: it may belong to a keystore the caller cannot see.
    """

    code = "alias_taken"

    def __init__(self, alias: str, region: str, **extra: str) -> None:
        super().__init__(
            f"{alias} is already used in {region} by another portal key of this AWS account "
            "(AWS allows one key per alias name in each account and region). Choose another alias.",
            alias=alias,
            region=region,
            **extra,
        )


def holder(aws_account_id: str, region: str, alias: str, *, exclude: uuid.UUID | None = None) -> Key | None:
    """The live portal key holding ``alias`` in one AWS account and region, of any keystore; None if it is free.

    A key holds its alias in its keystore's region and, for a multi-Region key, in each
    of its replicas' regions.
    """
    in_region = Q(keystore__region=region) | Q(pk__in=KeyReplica.objects.filter(region=region).values("key_id"))
    holders = Key.objects.filter(in_region, keystore__aws_account_id=aws_account_id, alias=alias).exclude(
        state=KeyState.DELETED
    )
    if exclude is not None:
        holders = holders.exclude(pk=exclude)
    return holders.order_by("created_at", "id").first()


def refuse_if_taken(
    keystore: Keystore, alias: str, regions: Iterable[str], *, exclude: uuid.UUID | None = None, state: str = ""
) -> None:
    """Raise :class:`AliasTaken` for the first of ``regions`` where another live key holds ``alias``.

    On its own a fail-fast check (no lock): the claim itself is checked again under
    :func:`reserve` or :func:`reserved`. ``state`` is the key's, for a refused operation on one.
    """
    if not alias:
        return
    for region in regions:
        if holder(keystore.aws_account_id, region, alias, exclude=exclude) is not None:
            raise AliasTaken(alias, region, **({"state": state} if state else {}))


def kms_key_in_use(arn: str) -> bool:
    """Whether a live portal key has the KMS key ``arn``, as its primary or as one of its replicas."""
    live = Key.objects.exclude(state=KeyState.DELETED)
    return (
        live.filter(kms_key_arn=arn).exists()
        or KeyReplica.objects.filter(kms_key_arn=arn, key__in=live.values("pk")).exists()
    )


def _lock_keys(keystore: Keystore, alias: str, regions: Iterable[str]) -> list[int]:
    """One lock per region, in a fixed order, so two claims of overlapping regions cannot deadlock."""
    keys = {
        int.from_bytes(
            hashlib.blake2b(f"{keystore.aws_account_id}|{region}|{alias}".encode(), digest_size=4).digest(),
            "big",
            signed=True,
        )
        for region in regions
    }
    return sorted(keys)


def reserve(
    keystore: Keystore, alias: str, regions: Iterable[str], *, exclude: uuid.UUID | None = None, state: str = ""
) -> None:
    """Inside an operation's transaction: lock ``alias`` in ``regions`` until the transaction ends, then check it.

    A concurrent claim of the same alias waits for this transaction, then sees its
    committed row and is refused. Without PostgreSQL (development) only the check runs.
    """
    regions = list(regions)
    if alias and connection.vendor == "postgresql":
        assert connection.in_atomic_block, "reserve() holds its locks until the transaction ends"
        with connection.cursor() as cursor:
            for key in _lock_keys(keystore, alias, regions):
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, key])
    refuse_if_taken(keystore, alias, regions, exclude=exclude, state=state)


@contextmanager
def reserved(keystore: Keystore, alias: str, regions: Iterable[str]) -> Iterator[None]:
    """For a create, which works outside a transaction: hold ``alias`` in ``regions`` for the block, checked.

    Session-level locks: the block creates the KMS key, claims the alias in AWS and
    commits the key's row; only then may another claim of the alias look.
    """
    regions = list(regions)
    keys = _lock_keys(keystore, alias, regions) if alias and connection.vendor == "postgresql" else []
    taken: list[int] = []
    try:
        with connection.cursor() as cursor:
            for key in keys:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_SPACE, key])
                taken.append(key)
        refuse_if_taken(keystore, alias, regions)
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                for key in reversed(taken):
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_SPACE, key])
        except DatabaseError:
            # The database session is gone, and PostgreSQL released its locks with it.
            logger.warning("could not release an alias lock", extra={"alias": alias})
