"""Slow material (an RSA-4096 key takes up to seconds) is generated before any row lock is taken.

The generator is wrapped to look, from another database connection, at whether the key's
row can be locked at the moment it runs: if generation ever moved inside the locked
part of an operation, the key would be locked then and this test would fail.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from keys import custody, services
from keys.models import Key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL=postgres://...)")


def lockable_from_elsewhere(key_id: Any) -> bool:
    """Whether another connection could lock the key's row right now (NOWAIT: never waits)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            with transaction.atomic():
                Key.objects.select_for_update(nowait=True).filter(pk=key_id).exists()
            answer.append(True)
        except DatabaseError:
            answer.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return answer[0]


def test_renew_generates_the_new_material_while_the_key_is_not_locked(
    people: Any, keystore: Any, aws_sandbox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="signer", key_spec="RSA_2048").key
    generate = custody.generate_material
    seen: list[tuple[str, bool]] = []

    def watched(key_spec: str = "SYMMETRIC_DEFAULT") -> custody.Material:
        seen.append((key_spec, lockable_from_elsewhere(key.pk)))
        return generate(key_spec)

    monkeypatch.setattr(custody, "generate_material", watched)
    # The lock really is taken later: a probe from inside the KMS step sees it held.
    real_provision = services._provision_kms_key
    locked_during_kms: list[bool] = []

    def provision(*args: Any, **kwargs: Any) -> tuple[str, str]:
        locked_during_kms.append(not lockable_from_elsewhere(key.pk))
        return real_provision(*args, **kwargs)

    monkeypatch.setattr(services, "_provision_kms_key", provision)
    new = services.key_renew(actor=bob, key_id=key.pk).key
    assert seen == [("RSA_2048", True)]
    assert locked_during_kms == [True]
    assert new.key_spec == "RSA_2048"
