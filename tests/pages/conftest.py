"""Page-test helpers: browsers logged in as the suite's personas, second factor included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from byok_portal.vocabulary import KeyState, KmsState
from keys.models import Key, KeyMaterial
from tests.web import verified_client


@pytest.fixture
def browser_as() -> Callable[[Any], Client]:
    return verified_client


def bulk_keys(keystore: Any, count: int, *, start: int = 0) -> list[Key]:
    """``count`` keys straight into the database (no KMS): every state, some expiring, some drifted."""
    states = list(KeyState)
    today = timezone.localdate()
    rows = []
    for n in range(start, start + count):
        state = states[n % len(states)]
        rows.append(
            Key(
                keystore=keystore,
                name=f"bulk-{n:04d}",
                alias=f"alias/bulk-{n:04d}" if state != KeyState.DELETED else "",
                tags={"n": str(n)},
                expires=today + dt.timedelta(days=n % 90) if n % 3 == 0 else None,
                state=state,
                kms_state=KmsState.ENABLED if n % 7 else KmsState.EMPTY,
                drift=["KMS key is EMPTY"] if n % 11 == 0 else [],
                kcv="ABC123",
                kms_key_arn=f"arn:aws:kms:eu-west-1:{keystore.aws_account_id}:key/bulk-{n:04d}",
                # Some overdue for rotation, some due soon, some later (SPEC §10).
                rotation_period_days=90 if n % 4 == 0 else None,
                next_rotation_date=today + dt.timedelta(days=n % 60 - 20) if n % 4 == 0 else None,
                material_valid_days=30 if n % 5 == 0 else None,
            )
        )
    keys = Key.objects.bulk_create(rows)
    # Material versions whose expiry in KMS is past, near or far, for keys with material_valid_days.
    now = timezone.now()
    KeyMaterial.objects.bulk_create(
        KeyMaterial(key=key, version=1, kcv="ABC123", valid_to=now + dt.timedelta(days=int(key.name[-4:]) % 10 - 2))
        for key in keys
        if key.material_valid_days
    )
    return keys
