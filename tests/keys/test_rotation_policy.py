"""The rotation policy (SPEC §10): periods, the keystore's default, and the daily job rotating due keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from byok_portal.vocabulary import KeyState
from keys import services
from keys.jobs.rotation import rotate_due_keys
from keys.models import Key
from keystores.models import RotationOnLimit

pytestmark = pytest.mark.django_db
SYSTEM = services.Actor.system("test")


@pytest.fixture(autouse=True)
def _fast_wrapping_keys(settings: Any) -> None:
    settings.BYOK_IMPORT_WRAPPING_KEY_SPEC = "RSA_2048"


def test_new_keys_take_the_keystores_default_and_the_period_sets_the_next_date(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    keystore.rotation_period_days = 365
    keystore.save()
    bob = people.actor(people.bob)
    key = services.key_create(actor=bob, keystore_id=keystore.pk, name="k").key
    assert key.rotation_period_days == 365
    assert key.next_rotation_date == timezone.localdate() + dt.timedelta(days=365)
    none = services.key_create(actor=bob, keystore_id=keystore.pk, name="n", rotation_period_days=None).key
    assert (none.rotation_period_days, none.next_rotation_date) == (None, None)

    with pytest.raises(ValidationError) as bad:
        services.key_update(actor=bob, key_id=key.pk, rotation_period_days=89)
    assert "rotation_period_days" in bad.value.message_dict
    key = services.key_update(actor=bob, key_id=key.pk, rotation_period_days=90).key
    assert key.next_rotation_date == timezone.localdate() + dt.timedelta(days=90)


def test_the_daily_job_rotates_due_keys_and_leaves_the_rest(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    due = services.key_create(actor=bob, keystore_id=keystore.pk, name="due", rotation_period_days=90).key
    later = services.key_create(actor=bob, keystore_id=keystore.pk, name="later", rotation_period_days=90).key
    today = timezone.localdate() + dt.timedelta(days=90)
    Key.objects.filter(pk=later.pk).update(next_rotation_date=today + dt.timedelta(days=1))

    summary = rotate_due_keys(actor=SYSTEM, today=today, pace_seconds=0)

    assert (summary.rotated, summary.failed) == (1, 0)
    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.material_version, due.rotations) == (2, 1)
    assert due.next_rotation_date == timezone.localdate() + dt.timedelta(days=90)  # counted from the rotation
    assert later.material_version == 1
    # Run again (a redelivered task) before another period has passed: nothing is due.
    assert rotate_due_keys(actor=SYSTEM, today=today - dt.timedelta(days=1), pace_seconds=0).rotated == 0


def test_a_due_key_that_cannot_rotate_is_flagged_or_renewed_as_its_policy_says(
    people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = people.actor(people.bob)
    flagged = services.key_create(
        actor=bob, keystore_id=keystore.pk, name="mac", key_spec="HMAC_256", rotation_period_days=90
    ).key
    renewed = services.key_create(
        actor=bob, keystore_id=keystore.pk, name="sig", key_spec="HMAC_256", rotation_period_days=90
    ).key
    services.key_update(actor=bob, key_id=renewed.pk, rotation_on_limit=RotationOnLimit.RENEW)
    today = timezone.localdate() + dt.timedelta(days=91)

    summary = rotate_due_keys(actor=SYSTEM, today=today, pace_seconds=0)

    assert (summary.flagged, summary.renewed, summary.rotated) == (1, 1, 0)
    event = AuditEvent.objects.get(key_id=flagged.pk, operation="rotate")
    assert (event.outcome, event.reason, event.details["why"]) == (
        "refused",
        "rotation_due_cannot_rotate",
        "not symmetric",
    )
    renewed.refresh_from_db()
    assert renewed.state == KeyState.REPLACED
    successor = Key.objects.get(replaces=renewed)
    assert (successor.rotation_period_days, successor.rotation_on_limit) == (90, RotationOnLimit.RENEW)
