"""Fixtures of the report tests: keys in several states, and a keystore the readers cannot see."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone

from byok_portal.vocabulary import KeyState, KmsState
from keys.models import Key, KeyMaterial, MaterialState
from keystores.models import Keystore
from tests.tasks.conftest import make_key  # noqa: F401 - shared with the task tests


def aged(key: Key, days: int) -> Key:
    """Make the key and its current material ``days`` old (created and imported then, never rotated)."""
    then = timezone.now() - dt.timedelta(days=days, hours=1)
    Key.objects.filter(pk=key.pk).update(created_at=then)
    KeyMaterial.objects.filter(key=key, state=MaterialState.CURRENT).update(imported_at=then)
    key.refresh_from_db()
    return key


@pytest.fixture
def estate(make_key: Any) -> dict[str, Key]:  # noqa: F811 - the fixture imported above
    """Keys of the ``keystore`` fixture in every state, of several ages, plus one in a keystore nobody here sees."""
    keys = {
        "fresh": aged(make_key(name="Fresh", alias="alias/fresh", expires=dt.date(2027, 3, 1)), 10),
        "old": aged(make_key(name="Old", alias="alias/old"), 400),
        "inactive": aged(
            make_key(name="Parked", alias="alias/parked", state=KeyState.INACTIVE, kms_state=KmsState.EMPTY), 200
        ),
        "deleted": aged(make_key(name="Gone", state=KeyState.DELETED, kms_state=KmsState.UNKNOWN), 900),
    }
    hidden = Keystore.objects.create(
        name="Elsewhere", aws_account_id="999988887777", region="eu-west-1", role_arn="arn:aws:iam::999988887777:role/x"
    )
    keys["hidden"] = Key.objects.create(
        id=uuid.uuid4(), keystore=hidden, name="Hidden", alias="alias/hidden", kcv="FFFFFF"
    )
    return keys
