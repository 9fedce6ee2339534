"""Renewal: the default name and expiry (one rule for API and page), the input checked, the new key's activity."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from audit.models import AuditEvent
from keys import selectors, services
from keys.models import Key, PendingCreation
from keys.services import MAX_NAME, renewal_defaults
from tests.keys.helpers import live_portal_kms_keys

TODAY = dt.date(2027, 3, 1)


def _key(name: str, created: dt.date, expires: dt.date | None) -> Key:
    return Key(
        name=name, created_at=dt.datetime(created.year, created.month, created.day, 12, tzinfo=dt.UTC), expires=expires
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("orders", "orders v2"),
        ("orders v2", "orders v3"),
        ("orders v9", "orders v10"),
        ("orders v", "orders v v2"),  # no number: not a version
        ("v2", "v2 v2"),  # nothing before the version: it is the name
        ("orders 2026", "orders 2026 v2"),
    ],
)
def test_the_name_gets_the_next_version(old: str, new: str) -> None:
    assert renewal_defaults(_key(old, TODAY, None), TODAY).name == new


def test_a_long_name_is_shortened_to_fit_its_suffix() -> None:
    name = renewal_defaults(_key("x" * MAX_NAME, TODAY, None), TODAY).name
    assert (len(name), name[-3:]) == (MAX_NAME, " v2")


def test_the_expiry_keeps_the_cryptoperiod_from_today() -> None:
    old = _key("orders", dt.date(2026, 1, 1), dt.date(2027, 1, 1))  # 365 days
    assert renewal_defaults(old, TODAY).expires == TODAY + dt.timedelta(days=365)


def test_no_expiry_stays_none_and_a_nonsense_period_is_one_day() -> None:
    assert renewal_defaults(_key("orders", dt.date(2026, 1, 1), None), TODAY).expires is None
    backwards = _key("orders", dt.date(2026, 1, 1), dt.date(2025, 1, 1))  # expiry edited to before creation
    assert renewal_defaults(backwards, TODAY).expires == TODAY + dt.timedelta(days=1)


@pytest.mark.django_db
def test_the_new_keys_activity_lists_the_renewal_that_created_it(people: Any, keystore: Any) -> None:
    bob = people.actor(people.bob)
    old = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    services.key_deactivate(actor=bob, key_id=old.pk)
    services.key_activate(actor=bob, key_id=old.pk)
    new = services.key_renew(actor=bob, key_id=old.pk, name="orders 2027").key
    renewal = AuditEvent.objects.get(key_id=old.pk, operation="renew", outcome="success")
    assert renewal.details["renewed_by"] == str(new.pk)
    assert [e.seq for e in selectors.recent_events(new, 10)] == [renewal.seq]  # not the old key's other events
    services.key_deactivate(actor=bob, key_id=new.pk)
    assert [e.operation for e in selectors.recent_events(new, 10)] == ["deactivate", "renew"]


@pytest.mark.django_db
def test_a_blank_name_renews_nothing(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob = people.actor(people.bob)
    old = services.key_create(actor=bob, keystore_id=keystore.pk, name="orders").key
    with pytest.raises(ValidationError) as refused:
        services.key_renew(actor=bob, key_id=old.pk, name="  ")
    assert set(refused.value.message_dict) == {"name"}
    assert not Key.objects.filter(replaces=old).exists()
    assert not PendingCreation.objects.exists()
    assert len(live_portal_kms_keys(aws_sandbox, keystore, settings.BYOK_TAG_KEY)) == 1
