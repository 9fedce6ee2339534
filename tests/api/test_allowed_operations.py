"""``allowed_operations`` lists ``download`` only while a download is prepared (issue 13 item 7)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keys.helpers import public_pem

pytestmark = pytest.mark.django_db

URL = "/api/v1/keys/"


def _listed(api: Any, key_id: str) -> dict[str, list[str]]:
    detail = api.get(f"{URL}{key_id}/", expect=200).json()["allowed_operations"]
    (row,) = [k for k in api.get(URL, expect=200).json()["results"] if k["id"] == key_id]
    return {"detail": detail, "list": row["allowed_operations"]}


def test_download_is_offered_only_while_something_is_prepared(api_as: Any, people: Any, keystore: Any) -> None:
    bob, carol = api_as(people.bob), api_as(people.carol)
    key_id = bob.post(URL, {"keystore": str(keystore.pk), "name": "orders"}, expect=201).json()["id"]

    before = _listed(bob, key_id)
    assert "download" not in before["detail"]
    assert before["list"] == before["detail"]
    assert "prepare_download" in before["detail"]

    prepared = bob.post(f"{URL}{key_id}/prepare-download/", {"public_key": public_pem()}, expect=200).json()
    assert "download" in prepared["allowed_operations"]
    assert _listed(carol, key_id) == {"detail": prepared["allowed_operations"]} | {
        "list": prepared["allowed_operations"]
    }

    carol.post(f"{URL}{key_id}/download/", expect=200)
    assert "download" not in _listed(carol, key_id)["detail"]
