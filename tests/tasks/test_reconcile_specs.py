"""Reconciliation of RSA and EC keys: the public key in KMS must be the portal's (SPEC §9)."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.identity import Actor
from audit.models import AuditEvent
from byok_portal.vocabulary import Operation
from keys import services
from keys.jobs.reconcile import PUBLIC_KEY_MISMATCH, KeyResult, reconcile_key
from keys.models import Key

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("reconcile")


@pytest.fixture(autouse=True)
def _no_rate_limit(settings: Any) -> None:
    settings.BYOK_RECONCILE_KMS_CALLS_PER_SECOND = 0


def signer(people: Any, keystore: Any, name: str) -> Key:
    return services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name=name, key_spec="ECC_NIST_P256"
    ).key


def test_an_asymmetric_key_whose_kms_key_has_its_public_key_is_in_step(people: Any, keystore: Any) -> None:
    key = signer(people, keystore, "a")
    assert reconcile_key(key.pk, actor=SYSTEM) == KeyResult.IN_STEP
    services.key_deactivate(actor=people.actor(people.bob), key_id=key.pk)
    # Without material KMS cannot answer GetPublicKey: nothing to compare, and no error either.
    assert reconcile_key(key.pk, actor=SYSTEM) == KeyResult.IN_STEP


def test_a_kms_key_with_another_public_key_is_drift(people: Any, keystore: Any) -> None:
    mine, other = signer(people, keystore, "mine"), signer(people, keystore, "other")
    # The portal's record points at a KMS key holding other material (e.g. a restore mixed rows up).
    Key.objects.filter(pk=mine.pk).update(kms_key_arn=other.kms_key_arn)

    assert reconcile_key(mine.pk, actor=SYSTEM) == KeyResult.DRIFT
    mine.refresh_from_db()
    mismatch = [line for line in mine.drift if "public key" in line]
    assert mismatch == [
        f"The KMS key's public key (SHA-256 {other.public_key_sha256}) is not the portal's "
        f"({mine.public_key_sha256}): KMS does not hold this key's material."
    ]
    event = AuditEvent.objects.filter(operation=Operation.RECONCILE, key_id=mine.pk).get()
    assert PUBLIC_KEY_MISMATCH in event.details["codes"]
