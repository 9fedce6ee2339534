"""Issue 13 item 6: a renewal names the new key and sets its expiry, explicitly or by a stated default."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from keys.models import Key

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def _key(api: Any, keystore: Any, *, age_days: int = 0, **extra: Any) -> dict[str, Any]:
    """A key created ``age_days`` ago (its creation date is what the default cryptoperiod counts from)."""
    key = dict(api.post(URL, {"keystore": str(keystore.pk), "name": "orders", **extra}, expect=201).json())
    Key.objects.filter(pk=key["id"]).update(created_at=timezone.now() - dt.timedelta(days=age_days))
    return key


def _renewal_event(old_id: str) -> AuditEvent:
    return AuditEvent.objects.filter(key_id=old_id, operation="renew", outcome="success").get()


def test_by_default_the_new_key_gets_the_next_version_and_the_same_cryptoperiod(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)
    today = timezone.localdate()
    # Created 300 days ago with 65 days left: a 365-day cryptoperiod, which the new key starts today.
    old = _key(bob, keystore, age_days=300, expires=(today + dt.timedelta(days=65)).isoformat())
    new = bob.post(f"{URL}{old['id']}/renew/", expect=201).json()
    assert (new["name"], new["expires"]) == ("orders v2", (today + dt.timedelta(days=365)).isoformat())
    newer = bob.post(f"{URL}{new['id']}/renew/", expect=201).json()
    assert newer["name"] == "orders v3"
    assert _renewal_event(old["id"]).details["name"] == "orders v2"
    assert _renewal_event(old["id"]).details["expires"] == new["expires"]


def test_a_key_without_expiry_renews_to_one_without(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    old = _key(bob, keystore, age_days=10)
    new = bob.post(f"{URL}{old['id']}/renew/", {}, expect=201).json()
    assert (new["name"], new["expires"]) == ("orders v2", None)
    assert _renewal_event(old["id"]).details["expires"] is None


def test_the_caller_names_the_new_key_and_sets_or_clears_its_expiry(api_as: Any, people: Any, keystore: Any) -> None:
    bob = api_as(people.bob)
    old = _key(bob, keystore, expires="2031-01-31")
    new = bob.post(f"{URL}{old['id']}/renew/", {"name": "orders 2027", "expires": "2032-06-30"}, expect=201).json()
    assert (new["name"], new["expires"], new["replaces"]) == ("orders 2027", "2032-06-30", old["id"])
    details = _renewal_event(old["id"]).details
    assert (details["renewed_by"], details["name"], details["expires"]) == (new["id"], "orders 2027", "2032-06-30")
    cleared = bob.post(f"{URL}{new['id']}/renew/", {"expires": None}, expect=201).json()
    assert (cleared["name"], cleared["expires"]) == ("orders 2027 v2", None)


def test_a_blank_name_or_a_bad_date_is_a_400_naming_the_field_and_renews_nothing(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)
    old = _key(bob, keystore)
    url = f"{URL}{old['id']}/renew/"
    assert set(bob.post(url, {"name": "   "}, expect=400).json()) == {"name"}
    assert set(bob.post(url, {"expires": "next year"}, expect=400).json()) == {"expires"}
    assert set(bob.post(url, {"name": "x", "alias": "alias/other"}, expect=400).json()) == {"alias"}  # strict
    assert not Key.objects.filter(replaces_id=old["id"]).exists()
    assert bob.get(f"{URL}{old['id']}/", expect=200).json()["state"] == "ACTIVE"


def test_an_outsider_is_refused_before_the_body_is_judged(api_as: Any, people: Any, keystore: Any) -> None:
    old = _key(api_as(people.bob), keystore)
    # A blank name would be a 400: the outsider gets the key's 404 instead, and the refusal is audited.
    api_as(people.eve).post(f"{URL}{old['id']}/renew/", {"name": ""}, expect=404)
    refusal = AuditEvent.objects.filter(key_id=old["id"], operation="renew").get()
    assert (refusal.outcome, refusal.reason) == ("refused", "permission_denied")
