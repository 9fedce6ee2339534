"""Issue 12 item 4: a key renewed, brought back to ACTIVE and renewed again answers 409, never 500."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from keys.models import Key

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def test_renewing_a_reactivated_replaced_key_is_a_409_naming_its_successor(
    api_as: Any, people: Any, keystore: Any
) -> None:
    bob = api_as(people.bob)
    key = bob.post(URL, {"keystore": str(keystore.pk), "name": "orders", "alias": "alias/orders"}, expect=201).json()
    url = f"{URL}{key['id']}/"
    first = bob.post(f"{url}renew/", expect=201).json()
    bob.post(f"{url}schedule-deletion/", {"pending_window_days": 7}, expect=200)
    bob.post(f"{url}cancel-deletion/", expect=200)
    assert bob.post(f"{url}activate/", expect=200).json()["state"] == "ACTIVE"

    refused = bob.post(f"{url}renew/", expect=409).json()

    assert (refused["code"], refused["reason"], refused["state"]) == ("invalid_state", "already_renewed", "ACTIVE")
    assert refused["replaced_by"] == first["id"]
    assert first["id"] in refused["detail"]
    event = AuditEvent.objects.filter(key_id=key["id"], operation="renew").order_by("-seq").first()
    assert event is not None
    assert (event.outcome, event.reason) == ("refused", "already_renewed")
    # The chain stays a line, and no second KMS key was made for the refused renewal.
    assert Key.objects.filter(keystore=keystore).count() == 2
    assert bob.get(url, expect=200).json()["replaced_by"] == first["id"]
    # Renewing the newest key of the chain still works.
    assert bob.post(f"{URL}{first['id']}/renew/", expect=201).json()["replaces"] == first["id"]
