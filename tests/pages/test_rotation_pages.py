"""The rotation policy and material expiry on pages (SPEC §10): the keystore's default on its edit form, a key's
``material_valid_days`` on the key's edit form, and the dashboard's rotation-due and material-expiring panels."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from keys import services
from keys.models import Key, KeyMaterial
from keystores.models import Keystore
from tests.pages.conftest import bulk_keys
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def edit_form(keystore: Keystore, **changes: Any) -> dict[str, Any]:
    form = {
        "name": keystore.name,
        "role_arn": keystore.role_arn,
        "rotation_period_days": "",
        "rotation_on_limit": "flag",
        "material_valid_days": "",
    }
    return {**form, **changes}


def test_an_admin_sets_the_keystores_default_rotation_policy_on_its_edit_page(
    people: Any, keystore: Keystore, aws_sandbox: str
) -> None:
    alice = verified_client(people.alice)
    page = alice.get(f"/keystores/{keystore.pk}/edit/").content.decode()
    for field in ("rotation_period_days", "rotation_on_limit", "material_valid_days"):
        assert f'name="{field}"' in page

    response = alice.post(
        f"/keystores/{keystore.pk}/edit/",
        edit_form(keystore, rotation_period_days="365", rotation_on_limit="renew", material_valid_days="60"),
    )

    assert response.status_code == 302
    keystore.refresh_from_db()
    assert (keystore.rotation_period_days, keystore.rotation_on_limit, keystore.material_valid_days) == (
        365,
        "renew",
        60,
    )
    detail = unescape(alice.get(f"/keystores/{keystore.pk}/").content.decode())
    assert "every 365 days" in detail
    assert "60 days after each import" in detail
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key
    assert (key.rotation_period_days, key.rotation_on_limit, key.material_valid_days) == (365, "renew", 60)


def test_the_keystore_form_refuses_values_outside_awss_ranges_next_to_the_field(
    people: Any, keystore: Keystore
) -> None:
    response = verified_client(people.alice).post(
        f"/keystores/{keystore.pk}/edit/", edit_form(keystore, rotation_period_days="30", material_valid_days="400")
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="id_rotation_period_days_error"' in html
    assert 'id="id_material_valid_days_error"' in html
    keystore.refresh_from_db()
    assert (keystore.rotation_period_days, keystore.material_valid_days) == (None, None)
    assert not AuditEvent.objects.filter(operation="update_keystore").exists()


def test_a_custodian_sets_a_keys_material_expiry_on_its_edit_page_and_sees_it_on_the_key_page(
    people: Any, keystore: Keystore, aws_sandbox: str
) -> None:
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="k").key
    bob = verified_client(people.bob)
    form = {
        "name": "k",
        "alias": "",
        "tags": "",
        "expires": "",
        "rotation_period_days": "",
        "rotation_on_limit": "flag",
    }

    refused = bob.post(f"/keys/{key.pk}/edit/", {**form, "material_valid_days": "0"})
    assert refused.status_code == 400
    assert 'id="id_material_valid_days_error"' in refused.content.decode()

    assert bob.post(f"/keys/{key.pk}/edit/", {**form, "material_valid_days": "14"}).status_code == 302
    key.refresh_from_db()
    assert key.material_valid_days == 14
    services.key_reimport(actor=people.actor(people.bob), key_id=key.pk)
    page = re.sub(r"<[^>]+>", "", unescape(bob.get(f"/keys/{key.pk}/").content.decode()))
    valid_to = KeyMaterial.objects.get(key=key).valid_to
    assert valid_to is not None
    assert f"14 days after each import, imported again before; earliest {valid_to:%Y-%m-%d %H:%M} UTC" in page


def test_the_dashboard_shows_rotation_due_and_overdue_and_material_expiring(people: Any, keystore: Keystore) -> None:
    today, now = timezone.localdate(), timezone.now()
    overdue, soon, later, inactive, expiring, far = bulk_keys(
        keystore, 6, start=7001
    )  # 7005 is the only one bulk_keys gives material
    for key, date in ((overdue, -2), (soon, 5), (later, 200)):
        Key.objects.filter(pk=key.pk).update(state="ACTIVE", next_rotation_date=today + dt.timedelta(days=date))
    Key.objects.filter(pk=inactive.pk).update(state="INACTIVE", next_rotation_date=today - dt.timedelta(days=9))
    for key, hours in ((expiring, 20), (far, 24 * 20)):
        Key.objects.filter(pk=key.pk).update(state="ACTIVE", material_valid_days=30, next_rotation_date=None)
        KeyMaterial.objects.filter(key=key).delete()
        KeyMaterial.objects.create(key=key, version=1, valid_to=now + dt.timedelta(hours=hours))

    response = verified_client(people.bob).get("/")

    html = unescape(response.content.decode())
    assert response.context["rotation"] == {"overdue": 1, "due_soon": 1, "material_expiring": 1}
    # The INACTIVE key is past its date too, but the rotation policy does not act on it.
    assert [(k.name, late) for k, late in response.context["rotation_due"]] == [
        (overdue.name, True),
        (soon.name, False),
    ]
    assert [k.name for k in response.context["material_expiring"]] == [expiring.name]
    assert "1</strong> overdue" in html
    assert expiring.name in html
    assert far.name not in html
    rotation_list = verified_client(people.bob).get("/keys/?attention=rotation").context["page"].object_list
    assert [k.name for k in rotation_list] == [overdue.name, soon.name]
    material_list = verified_client(people.bob).get("/keys/?attention=material").context["page"].object_list
    assert [k.name for k in material_list] == [expiring.name]


def test_the_key_page_marks_an_overdue_rotation_by_the_same_rule_as_the_dashboard(
    people: Any, keystore: Keystore
) -> None:
    [key] = bulk_keys(keystore, 1, start=7100)
    Key.objects.filter(pk=key.pk).update(
        state="ACTIVE", rotation_period_days=90, next_rotation_date=timezone.localdate() - dt.timedelta(days=1)
    )
    bob = verified_client(people.bob)
    assert "overdue" in bob.get(f"/keys/{key.pk}/").content.decode()
    Key.objects.filter(pk=key.pk).update(state="REPLACED")  # renewed already: the policy no longer acts on it
    assert "overdue" not in bob.get(f"/keys/{key.pk}/").content.decode()
