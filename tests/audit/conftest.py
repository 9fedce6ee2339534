"""Personas and event factories for the audit tests.

alice is auditor of keystore A, carol admin of A, bob custodian of B, charlie an
outsider with no role anywhere, root a superuser.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from accounts.identity import Actor
from accounts.models import User
from audit.chain import GENESIS, hasher
from audit.models import AuditEvent, AuditHead
from audit.services import record
from byok_portal.vocabulary import Outcome
from keys.models import Key
from keystores.models import Keystore, Membership, Role


@dataclass
class World:
    alice: User
    bob: User
    carol: User
    charlie: User
    root: User
    keystore_a: Keystore
    keystore_b: Keystore
    key_a: Key
    key_b: Key


def make_keystore(name: str, account: str) -> Keystore:
    return Keystore.objects.create(
        name=name, aws_account_id=account, region="eu-west-1", role_arn=f"arn:aws:iam::{account}:role/byok"
    )


def make_key(keystore: Keystore, alias: str) -> Key:
    key_id = uuid.uuid4()
    return Key.objects.create(
        id=key_id,
        keystore=keystore,
        name=alias.removeprefix("alias/"),
        alias=alias,
        kms_key_arn=f"arn:aws:kms:eu-west-1:{keystore.aws_account_id}:key/{uuid.uuid4()}",
    )


@pytest.fixture
def world(db: Any) -> World:
    keystore_a = make_keystore("Payments", "111111111111")
    keystore_b = make_keystore("Billing", "222222222222")
    users = {
        name: User.objects.create_user(username=name, password="x" * 16, first_name=name.title())
        for name in ("alice", "bob", "carol", "charlie")
    }
    root = User.objects.create_superuser(username="root", password="x" * 16)
    Membership.objects.create(keystore=keystore_a, user=users["alice"], role=Role.AUDITOR)
    Membership.objects.create(keystore=keystore_a, user=users["carol"], role=Role.ADMIN)
    Membership.objects.create(keystore=keystore_b, user=users["bob"], role=Role.CUSTODIAN)
    return World(
        root=root,
        keystore_a=keystore_a,
        keystore_b=keystore_b,
        key_a=make_key(keystore_a, "alias/payments"),
        key_b=make_key(keystore_b, "alias/billing"),
        **users,
    )


def record_event(
    user: User,
    key: Key | None = None,
    keystore: Keystore | None = None,
    *,
    source_ip: str = "192.0.2.10",
    **kwargs: Any,
) -> AuditEvent:
    values: dict[str, Any] = {"operation": "deactivate", "outcome": Outcome.SUCCESS}
    values.update(kwargs)
    actor = Actor.for_user(user, source_ip=source_ip, request_id=uuid.uuid4().hex)
    return record(actor=actor, key=key, keystore=keystore, **values)


def bulk_events(count: int, *, keystore: Keystore | None = None, key: Key | None = None, **fields: Any) -> None:
    """Append ``count`` valid chained events fast (bulk insert), keeping the stored head in step.

    The head may only move forward, which a bulk append does, so no trigger is bypassed.
    """
    head, _ = AuditHead.objects.get_or_create(pk=1)
    previous, seq = head.hash or GENESIS, head.seq
    hash_one = hasher()
    now = timezone.now()
    events = []
    for _ in range(count):
        seq += 1
        values: dict[str, Any] = {
            "seq": seq,
            "time": now,
            "actor_iss": "local",
            "actor_sub": "bulk",
            "actor_name": "Bulk Writer",
            "source_ip": "198.51.100.7",
            "request_id": f"req-{seq}",
            "operation": "update",
            "keystore_id": keystore.pk if keystore else None,
            "keystore_name": keystore.name if keystore else "",
            "key_id": key.pk if key else None,
            "key_alias": key.alias if key else "",
            "key_arn": key.kms_key_arn if key else "",
            "outcome": "success",
            "reason": "",
            "state_before": "ACTIVE",
            "state_after": "ACTIVE",
            "kms_request_ids": [str(uuid.UUID(int=seq))],
            "error": "",
            "details": {"n": seq},
        }
        values.update(fields)
        previous = hash_one(previous, values)
        events.append(AuditEvent(hash=previous, **values))
    AuditEvent.objects.bulk_create(events, batch_size=2000)
    AuditHead.objects.filter(pk=1).update(seq=seq, hash=previous, time=now)


class Tamper:
    """Changes the table the way someone with superuser access could: triggers switched off, then back on."""

    def __enter__(self) -> Any:
        self.cursor = connection.cursor()
        self.cursor.execute("SET LOCAL session_replication_role = replica")
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        self.cursor.execute("SET LOCAL session_replication_role = origin")
        self.cursor.close()


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...): the triggers exist only there")
