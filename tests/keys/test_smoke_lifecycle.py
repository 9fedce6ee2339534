"""A key's whole life against the sandbox, step by step, checking KMS after each step."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from byok_portal.vocabulary import KeyState, KmsState
from keys import services
from keys.custody import kcv
from tests.keys.helpers import public_pem, rsa_private_key, sandbox_view

pytestmark = pytest.mark.django_db


def test_a_key_lives_its_whole_life_in_step_with_kms(people: Any, keystore: Any, aws_sandbox: str) -> None:
    bob, carol = people.actor(people.bob), people.actor(people.carol)
    key = services.key_create(
        actor=bob, keystore_id=keystore.pk, name="orders", alias="alias/orders", tags={"app": "shop"}
    ).key
    view = sandbox_view(aws_sandbox, key)
    assert (key.state, key.kms_state) == (KeyState.ACTIVE, KmsState.ENABLED)
    assert view["key_state"] == "Enabled"
    assert view["kcv"] == key.kcv
    assert view["aliases"] == ["alias/orders"]
    assert view["tags"]["app"] == "shop"

    key = services.key_deactivate(actor=bob, key_id=key.pk).key
    assert key.state == KeyState.INACTIVE
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingImport"
    assert sandbox_view(aws_sandbox, key)["has_material"] is False

    key = services.key_activate(actor=bob, key_id=key.pk).key
    view = sandbox_view(aws_sandbox, key)
    assert (key.state, view["key_state"], view["kcv"]) == (KeyState.ACTIVE, "Enabled", key.kcv)

    services.key_prepare_download(actor=bob, key_id=key.pk, public_key_pem=public_pem())
    download = services.key_download(actor=carol, key_id=key.pk)
    material = rsa_private_key().decrypt(
        download.wrapped_key_material,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert hashlib.sha256(material).hexdigest() == sandbox_view(aws_sandbox, key)["material_sha256"]
    assert kcv(material) == download.kcv == key.kcv

    new = services.key_renew(actor=bob, key_id=key.pk).key
    key.refresh_from_db()
    assert (key.state, new.state, new.alias, key.alias) == (KeyState.REPLACED, KeyState.ACTIVE, "alias/orders", "")
    assert sandbox_view(aws_sandbox, new)["aliases"] == ["alias/orders"]
    assert sandbox_view(aws_sandbox, key)["key_state"] == "Enabled"
    assert new.kcv != key.kcv

    key = services.key_schedule_deletion(actor=bob, key_id=key.pk, pending_window_days=7).key
    assert sandbox_view(aws_sandbox, key)["key_state"] == "PendingDeletion"
    key = services.key_cancel_deletion(actor=bob, key_id=key.pk).key
    view = sandbox_view(aws_sandbox, key)
    assert (key.state, view["key_state"], view["has_material"]) == (KeyState.INACTIVE, "PendingImport", False)
