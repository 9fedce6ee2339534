"""``POST /api/v1/keys/{id}/recreate/``: the API's way out of a vanished KMS key, as the key page's."""

from __future__ import annotations

from typing import Any

import pytest

from accounts.identity import Actor
from keys.jobs.reconcile import reconcile_key
from keys.models import Key
from tests.keys.helpers import sandbox_view
from tests.keys.test_recreate import vanish

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def test_a_vanished_kms_key_is_reported_and_recreated_through_the_api(
    api_as: Any, people: Any, keystore: Any, aws_sandbox: str
) -> None:
    bob = api_as(people.bob)
    created = bob.post(URL, {"keystore": str(keystore.pk), "name": "orders", "alias": "alias/orders"}, expect=201)
    key = created.json()
    vanish(aws_sandbox, Key.objects.get(pk=key["id"]))
    reconcile_key(key["id"], actor=Actor.system("reconcile"))

    seen = bob.get(f"{URL}{key['id']}/", expect=200).json()
    recreated = bob.post(f"{URL}{key['id']}/recreate/", expect=200).json()
    again = bob.post(f"{URL}{key['id']}/recreate/", expect=409).json()

    assert (seen["kms_state"], seen["kms_key_arn"]) == ("MISSING", key["kms_key_arn"])
    assert recreated["kms_key_arn"] != key["kms_key_arn"]
    assert (recreated["state"], recreated["kms_state"]) == ("ACTIVE", "ENABLED")
    view = sandbox_view(aws_sandbox, Key.objects.get(pk=key["id"]))
    assert (view["kcv"], view["aliases"]) == (key["kcv"], ["alias/orders"])
    assert "still exists in AWS" in str(again)
