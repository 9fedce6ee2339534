"""REST clients authenticate with the provider's ID tokens; every bad token is a 401 saying why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from rest_framework.test import APIClient

from accounts.models import User
from tests.oidc_provider.fixtures import OIDCProvider

pytestmark = [pytest.mark.oidc, pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

WHOAMI = "/api/test/whoami/"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def call(token: str) -> Any:
    return APIClient().get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}")


def claims_for(provider: OIDCProvider, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": provider.client_id, "sub": "sub-api", "iat": now, "exp": now + 600} | extra


def provider_kid(provider: OIDCProvider) -> str:
    kid: str = provider.jwks["keys"][0]["kid"]
    return kid


def assert_refused(response: Any, message: str) -> None:
    assert response.status_code == 401, response.content
    assert message in response.json()["detail"], response.json()
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_genuine_id_token_authenticates_and_provisions_a_user_without_roles(oidc_settings: OIDCProvider):
    oidc_settings.set_claims("sub-api-user", email="api@example.com")
    token = oidc_settings.code_flow_id_token("sub-api-user")

    response = call(token)

    assert response.status_code == 200, response.content
    assert response.json()["iss"] == oidc_settings.issuer
    assert response.json()["sub"] == "sub-api-user"
    user = User.objects.get(oidc_issuer=oidc_settings.issuer, oidc_subject="sub-api-user")
    assert user.email == "api@example.com"
    assert user.memberships.count() == 0
    assert not user.user_permissions.exists()


def test_the_same_subject_by_browser_and_by_token_is_one_account(oidc_settings: OIDCProvider):
    call(oidc_settings.mint({"sub": "sub-twice"}))
    call(oidc_settings.mint({"sub": "sub-twice", "email": "changed@example.com"}))

    assert User.objects.filter(oidc_subject="sub-twice").count() == 1


def test_an_expired_token_is_refused(oidc_settings: OIDCProvider):
    now = int(time.time())
    assert_refused(call(oidc_settings.mint({"sub": "s", "iat": now - 7200, "exp": now - 3600})), "expired")


def test_a_token_for_another_client_is_refused(oidc_settings: OIDCProvider):
    assert_refused(call(oidc_settings.mint({"sub": "s", "aud": "someone-else"})), "wrong audience")


def test_a_token_with_several_audiences_needs_us_as_authorized_party(oidc_settings: OIDCProvider):
    token = oidc_settings.mint({"sub": "s", "aud": [oidc_settings.client_id, "other"], "azp": "other"})
    assert_refused(call(token), "azp")


def test_a_token_from_another_issuer_is_refused(oidc_settings: OIDCProvider):
    assert_refused(call(oidc_settings.mint({"sub": "s", "iss": "https://evil.example.com"})), "wrong issuer")


def test_a_token_signed_by_another_key_under_the_providers_kid_is_refused(oidc_settings: OIDCProvider):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        claims_for(oidc_settings), other_key, algorithm="RS256", headers={"kid": provider_kid(oidc_settings)}
    )
    assert_refused(call(token), "signature does not verify")


def test_a_token_with_an_unknown_kid_is_refused(oidc_settings: OIDCProvider):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_for(oidc_settings), other_key, algorithm="RS256", headers={"kid": "not-published"})
    assert_refused(call(token), "No signing key")


def test_an_unsigned_alg_none_token_is_refused(oidc_settings: OIDCProvider):
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": provider_kid(oidc_settings)}).encode())
    payload = b64(json.dumps(claims_for(oidc_settings)).encode())
    assert_refused(call(f"{header}.{payload}."), "'none' is not accepted")


def test_an_hs256_token_keyed_with_the_providers_public_key_is_refused(oidc_settings: OIDCProvider):
    public_jwk = json.dumps(oidc_settings.jwks["keys"][0])
    public_pem = jwt.algorithms.RSAAlgorithm.from_jwk(public_jwk).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider_kid(oidc_settings)}).encode())
    payload = b64(json.dumps(claims_for(oidc_settings)).encode())
    signature = b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert_refused(call(f"{header}.{payload}.{signature}"), "'HS256' is not accepted")


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "é"])
def test_garbage_is_refused(oidc_settings: OIDCProvider, garbage: str):
    response = APIClient().get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {garbage}".encode().decode("latin-1"))
    assert_refused(response, "Invalid ID token")


def test_a_header_with_extra_parts_is_refused(oidc_settings: OIDCProvider):
    response = APIClient().get(WHOAMI, HTTP_AUTHORIZATION="Bearer one two")
    assert_refused(response, "Malformed Authorization header")


@pytest.mark.parametrize("claim", ["sub", "exp", "iat"])
def test_a_token_missing_a_required_claim_is_refused(oidc_settings: OIDCProvider, claim: str):
    token = oidc_settings.mint({"sub": "s"}, unset=(claim,))
    assert_refused(call(token), f"required claim '{claim}'")


def test_a_token_of_a_disabled_account_is_refused(oidc_settings: OIDCProvider):
    User.objects.create(username="gone", oidc_issuer=oidc_settings.issuer, oidc_subject="sub-gone", is_active=False)
    assert_refused(call(oidc_settings.mint({"sub": "sub-gone"})), "disabled")


def test_bearer_tokens_are_refused_when_oidc_is_not_configured(settings: Any):
    settings.OIDC_ENABLED = False
    response = APIClient().get(WHOAMI, HTTP_AUTHORIZATION="Bearer whatever")
    assert_refused(response, "OpenID Connect is not configured")


def test_no_credentials_is_a_401_with_the_bearer_challenge(db: Any):
    response = APIClient().get(WHOAMI)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_refused_tokens_provision_nobody(oidc_settings: OIDCProvider):
    call(oidc_settings.mint({"sub": "sub-never", "aud": "someone-else"}))
    assert not User.objects.filter(oidc_subject="sub-never").exists()


def test_a_login_token_with_another_nonce_is_refused(oidc_settings: OIDCProvider):
    from accounts.tokens import InvalidIDToken, verify_id_token

    token = oidc_settings.mint({"sub": "s", "nonce": "sent-by-someone-else"})
    with pytest.raises(InvalidIDToken, match="nonce"):
        verify_id_token(token, nonce="the-one-we-sent")
    assert verify_id_token(token, nonce="sent-by-someone-else")["sub"] == "s"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_an_access_token_is_not_an_id_token(oidc_settings: OIDCProvider, typ: str):
    token = oidc_settings.mint({"sub": "s"}, header={"typ": typ})
    assert_refused(call(token), "is an access token")
    assert not User.objects.filter(oidc_subject="s").exists()


def test_a_token_valid_for_ten_years_is_refused(oidc_settings: OIDCProvider):
    now = int(time.time())
    token = oidc_settings.mint({"sub": "s", "iat": now, "exp": now + 10 * 365 * 86400})
    assert_refused(call(token), "valid for too long")


def test_a_token_issued_long_ago_is_refused_even_if_unexpired(oidc_settings: OIDCProvider, settings: Any):
    settings.OIDC_ID_TOKEN_MAX_AGE_SECONDS = 3600
    now = int(time.time())
    # A lifetime of 2.5 h is within the 24 h bound; it is the age of 2 h that is refused.
    token = oidc_settings.mint({"sub": "s", "iat": now - 2 * 3600, "exp": now + 1800})
    assert_refused(call(token), "issued too long ago")


def test_a_token_within_the_bounds_is_accepted(oidc_settings: OIDCProvider, settings: Any):
    now = int(time.time())
    token = oidc_settings.mint({"sub": "sub-fine", "iat": now - 3600, "exp": now + 3600})
    assert call(token).status_code == 200
