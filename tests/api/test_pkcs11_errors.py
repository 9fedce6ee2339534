"""What an API client sees when the HSM cannot do what it is asked (BYOK_CUSTODY=pkcs11, SPEC §13): never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from keys.models import Key

URL = "/api/v1/keys/"
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pkcs11_custody")]


def test_a_mechanism_the_token_lacks_is_a_503_naming_it(api_as: Any, people: Any, keystore: Any, settings: Any) -> None:
    settings.BYOK_PKCS11_OAEP_HASH = "SHA256"  # SoftHSM2 2.6's RSA-OAEP has SHA-1 only
    body = api_as(people.bob).post(URL, {"keystore": str(keystore.pk), "name": "k"}, expect=503).json()
    assert body["code"] == "hsm_mechanism_missing"
    assert "CKM_RSA_PKCS_OAEP with SHA256/MGF1-SHA256" in body["detail"]
    assert not Key.objects.exists()


def test_a_spec_the_hsm_cannot_hold_is_a_400_on_key_spec(api_as: Any, people: Any, keystore: Any) -> None:
    body = (
        api_as(people.bob)
        .post(
            URL,
            {"keystore": str(keystore.pk), "name": "k", "key_spec": "RSA_2048", "key_usage": "SIGN_VERIFY"},
            expect=400,
        )
        .json()
    )
    assert "CKM_RSA_AES_KEY_WRAP" in str(body["key_spec"])
    assert not Key.objects.exists()
